"""`latentsync prepare`: the data pipeline on real clips (shot cuts, segments, rejections with reasons, the audio
shift of the sync step), the manifest, file lists and re-runs that redo only what changed."""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys

import av
import numpy as np
import pytest

from conftest import MEDIA
from prepare_inputs import CUT_FRAME, make_inputs
from latentsync.audio import load_audio
from latentsync.cli import data_cmds
from latentsync.data.datasets import read_fileslist
from latentsync.data.prepare import PrepareSettings, prepare_dataset
from latentsync.data.prepare.clipfiles import clip_audio
from latentsync.data.prepare.segments import detect_shots, segment_spans, shot_spans
from latentsync.data.prepare import steps
from latentsync.data.prepare.steps import Context, Task, run_task
from latentsync.errors import InputError
from latentsync.media import probe_video

# Short test clips: segments of 1-2 s (the published 5-10 s are checked on segment_spans below); the model filters
# are switched off here (tests/test_prepare_filters.py runs them).
SETTINGS = PrepareSettings(64, min_seconds=1.0, max_seconds=2.0, face_backend="mediapipe", skip=("sync", "quality"))


def table(out, name: str, columns: str = "*") -> list[tuple]:
    with sqlite3.connect(out / "manifest.sqlite") as db:
        return sorted(db.execute(f"SELECT {columns} FROM {name}").fetchall(), key=repr)


def step_result(out, item: str, step: str) -> dict:
    with sqlite3.connect(out / "manifest.sqlite") as db:
        (result,) = db.execute("SELECT result FROM steps WHERE item = ? AND step = ?", (item, step)).fetchone()
    return json.loads(result)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare")
    inputs = make_inputs(root / "raw")
    report = prepare_dataset(inputs, root / "out", SETTINGS, workers=2, progress=False)
    return inputs, root / "out", report


def clips_by_video(out) -> dict[str, list[tuple[int, int]]]:
    found: dict[str, list] = {}
    for video, start, end in table(out, "clips", "video, start, end"):
        found.setdefault(video, []).append((start, end))
    return {k: sorted(v) for k, v in found.items()}


def test_shot_detection_on_a_hard_cut(prepared):
    inputs, out, _ = prepared
    cuts = detect_shots(inputs / "cut.mp4", threshold=2.0)
    assert len(cuts) == 1 and abs(cuts[0] - CUT_FRAME) <= 1
    assert detect_shots(MEDIA / "demo1_360p.mp4") == []  # one continuous shot: no cut
    # the pipeline splits there: no segment of cut.mp4 crosses the cut
    spans = clips_by_video(out)["cut.mp4"]
    assert len(spans) == 2 and all(end <= cuts[0] or start >= cuts[0] for start, end in spans)
    assert spans[0][1] == cuts[0]  # the first shot's face is seen to its last frame


def test_segments_stay_within_the_limits(prepared):
    _, out, _ = prepared
    for start, end, seconds in table(out, "clips", "start, end, seconds"):
        assert 1.0 <= seconds <= 2.0 and seconds == (end - start) / 25


@pytest.mark.parametrize(
    "seconds, expected",
    [(4.9, []), (5.0, [5.0]), (10.0, [10.0]), (12.0, [6.0, 6.0]), (23.0, [7.68, 7.64, 7.68]), (31.0, [7.76, 7.76, 7.72, 7.76])],
)
def test_published_segments_last_5_to_10_s(seconds, expected):
    frames = round(seconds * 25)
    min_frames, max_frames = PrepareSettings().clip_frames()
    assert (min_frames, max_frames) == (125, 250)
    spans = segment_spans(np.ones(frames, bool), [(0, frames)], min_frames, max_frames)
    assert [(b - a) / 25 for a, b in spans] == expected
    assert all(b == c for (_, b), (c, _) in zip(spans[:-1], spans[1:]))  # back to back


def test_segments_respect_shots_and_face_gaps():
    present = np.ones(400, bool)
    present[300:310] = False  # the face is away for 10 frames
    spans = segment_spans(present, shot_spans([130], 400), 50, 100)
    assert spans == [(0, 65), (65, 130), (130, 215), (215, 300), (310, 400)]


def test_unreadable_and_faceless_videos_are_rejected_with_reasons(prepared):
    _, out, report = prepared
    rejected = {video: (step, reason) for video, step, reason, state in table(out, "videos", "video, step, reason, state")
                if state == "rejected"}
    assert rejected == {"broken.mp4": ("read", "unreadable"), "noface.mp4": ("faces", "no face")}
    details = dict(table(out, "videos", "video, detail"))
    assert "invalid data" in details["broken.mp4"].lower() and "no face found in 25 frames" in details["noface.mp4"]
    assert set(report.rejected_videos) == {"broken.mp4", "noface.mp4"}
    assert report.steps["read"] == {"in": 4, "kept": 3, "rejected": {"unreadable": 1}}
    assert report.steps["faces"] == {"in": 3, "kept": 2, "rejected": {"no face": 1}}


def test_clips_are_aligned_25fps_with_their_speech(prepared):
    inputs, out, report = prepared
    assert len(report.clips) == 3
    for clip in report.clips:
        info = probe_video(clip)
        assert (info.width, info.height, info.fps) == (64, 64, 25.0)
        with av.open(str(clip)) as container:
            assert container.streams.audio[0].rate == 16000
    # the 30 fps input: 2 s at 25 fps, speech unshifted (sync is off)
    clip = out / "clips/demo3_30fps/000000-000049.mp4"
    assert probe_video(clip).num_frames == 50
    ours, source = load_audio(clip)[:30000], load_audio(inputs / "demo3_30fps.mp4")[:30000]
    lags = range(-64, 65)
    assert max(lags, key=lambda s: float(np.dot(np.roll(ours, s), source))) == 0


def test_fileslist_and_split_list_every_kept_clip(prepared):
    _, out, report = prepared
    assert read_fileslist(out / "fileslist.txt") == report.clips
    assert (out / "fileslist.txt").read_text().splitlines()[0].startswith("clips/")  # relative to OUT_DIR
    train = (out / "fileslist_train.txt").read_text().splitlines()
    val = (out / "fileslist_val.txt").read_text().splitlines()
    assert sorted(train + val) == sorted((out / "fileslist.txt").read_text().splitlines())
    assert sorted(read_fileslist(data_dir=out)) == sorted(report.clips)  # work copies are not taken for clips
    splits = {video: {s for (v, s) in table(out, "clips", "video, split") if v == video} for video in ("cut.mp4",)}
    assert len(splits["cut.mp4"]) == 1  # split by source video


def test_offset_correction_shifts_the_audio_by_offset_x_40ms(prepared):
    inputs, out, _ = prepared
    source = load_audio(inputs / "cut.mp4")
    start, end = 0, 50
    base = clip_audio(source, start, end, 0)
    for offset in (3, -2):
        shifted = clip_audio(source, start, end, offset)
        lag = offset * 640  # 40 ms of 16 kHz samples per frame of offset
        if offset > 0:
            assert np.array_equal(shifted[lag:], base[:-lag]) and not shifted[:lag].any()  # delayed, silence first
        else:
            assert np.array_equal(shifted, source[-lag : -lag + len(base)])
    # through the real publish step: the kept clip's audio is the aligned clip's, shifted by 3 frames
    ctx = Context(str(inputs), str(out), SETTINGS, "mediapipe")
    aligned = step_result(out, "cut.mp4#000000-000049", "align")["aligned"]
    done = run_task(ctx, Task("publish", "x", "cut.mp4", {"span": [0, 50], "aligned": aligned, "offset": 3}))
    assert done.status == "done" and done.result["path"] == "clips/cut/000000-000049.mp4"
    assert done.result["shift_ms"] == 120
    published, original = load_audio(out / done.result["path"]), load_audio(out / aligned)
    window = slice(4000, 28000)
    lags = range(-2560, 2561)
    best = max(lags, key=lambda s: float(np.dot(published[window], original[window.start - s : window.stop - s])))
    assert best == 3 * 640
    done = run_task(ctx, Task("publish", "x", "cut.mp4", {"span": [0, 50], "aligned": aligned, "offset": 0}))
    assert done.status == "done"  # put back as the pipeline made it


def test_rerun_runs_nothing_and_changes_nothing(prepared):
    inputs, out, first = prepared
    before = table(out, "steps")
    mtimes = {c: c.stat().st_mtime_ns for c in first.clips}
    again = prepare_dataset(inputs, out, SETTINGS, workers=2, progress=False)
    assert again.computed == {}
    assert table(out, "steps") == before and again.clips == first.clips
    assert {c: c.stat().st_mtime_ns for c in again.clips} == mtimes


def test_changed_settings_redo_only_the_steps_they_affect(prepared, tmp_path):
    inputs, out, first = prepared
    runs = dict(((r[0], r[1]), r[2]) for r in table(out, "steps", "item, step, run"))
    wider = prepare_dataset(inputs, out, PrepareSettings(**{**SETTINGS.__dict__, "resolution": 96}), workers=2,
                            progress=False)
    assert wider.computed == {"align": 3, "publish": 3}  # faces, shots, segments are kept
    assert probe_video(wider.clips[0]).width == 96
    stricter = prepare_dataset(inputs, out, PrepareSettings(**{**SETTINGS.__dict__, "resolution": 96, "min_seconds": 1.9}),
                               workers=2, progress=False)
    assert stricter.computed == {"segments": 2}  # the 1.48 s segment of cut.mp4 is dropped; its clip is deleted
    assert len(stricter.clips) == 2 and not (out / "clips/cut/000063-000099.mp4").exists()
    again = prepare_dataset(inputs, out, SETTINGS, workers=2, progress=False)
    assert again.computed == {"segments": 2, "align": 3, "publish": 3}
    kept = {k: v for k, v in dict(((r[0], r[1]), r[2]) for r in table(out, "steps", "item, step, run")).items()
            if k[1] in ("read", "shots", "faces")}
    assert kept == {k: v for k, v in runs.items() if k[1] in ("read", "shots", "faces")}


def test_manifest_records_every_step_of_every_item(prepared):
    _, out, _ = prepared
    steps = {(item, step): status for item, step, status in table(out, "steps", "item, step, status")}
    assert steps[("broken.mp4", "read")] == "rejected" and not any(i == "broken.mp4" and s != "read" for i, s in steps)
    assert sorted(s for (i, s) in steps if i == "noface.mp4") == ["faces", "read", "resample", "shots"]
    for clip in ("cut.mp4#000000-000049", "cut.mp4#000063-000099", "demo3_30fps.mp4#000000-000049"):
        assert {s: st for (i, s), st in steps.items() if i == clip} == {"align": "done", "publish": "done"}
    rows = {r[0]: r[1:] for r in table(out, "clips", "clip, state, path, video")}
    assert rows["cut.mp4#000063-000099"] == ("kept", "clips/cut/000063-000099.mp4", "cut.mp4")
    result = step_result(out, "cut.mp4", "faces")
    assert result["found"] + result["absent"] == 100 and (out / result["track"]).is_file()


def test_cli_thresholds_accept_any_number():
    parser = argparse.ArgumentParser()
    data_cmds.register(parser.add_subparsers())
    assert data_cmds.prepare_settings(parser.parse_args(["prepare", "in", "out"])) == PrepareSettings()
    args = parser.parse_args(["prepare", "in", "out", "--min-sync-confidence=-1e9", "--max-sync-offset", "15",
                              "--min-quality", "1e9", "--skip", "shots,quality", "--skip", "resample"])
    assert data_cmds.prepare_settings(args) == PrepareSettings(
        min_sync_confidence=-1e9, max_sync_offset=15, min_quality=1e9, skip=("quality", "resample", "shots"))


def test_bad_settings_fail_before_any_work(tmp_path):
    with pytest.raises(InputError, match="unknown step"):
        prepare_dataset(tmp_path, tmp_path / "out", PrepareSettings(skip=("faces",)))
    with pytest.raises(InputError, match="min seconds <= max seconds"):
        prepare_dataset(tmp_path, tmp_path / "out", PrepareSettings(min_seconds=3, max_seconds=2))
    with pytest.raises(InputError, match="no videos"):
        prepare_dataset(tmp_path, tmp_path / "out", SETTINGS)
    assert not (tmp_path / "out").exists()


def test_face_filter_and_resampling_switch(prepared):
    inputs, out, _ = prepared
    tiny = prepare_dataset(inputs, out, PrepareSettings(**{**SETTINGS.__dict__, "min_face_size": 1e6, "max_faces": 1}),
                           workers=2, progress=False)
    assert tiny.computed == {"face_filter": 3} and tiny.clips == []
    assert tiny.steps["face_filter"]["rejected"] == {"face too small": 3}
    sizes = [size for (size,) in table(out, "clips", "face_size")]
    assert all(20 < size < 200 for size in sizes)  # px, shorter side of the face box in the 180 x 320 inputs
    assert [faces for (faces,) in table(out, "clips", "faces")] == [1, 1, 1]
    single = prepare_dataset(inputs, out, PrepareSettings(**{**SETTINGS.__dict__, "min_face_size": 10, "max_faces": 1}),
                             workers=2, progress=False)
    assert single.computed == {"publish": 3} and len(single.clips) == 3  # nothing measured again
    native = prepare_dataset(inputs, out, PrepareSettings(**{**SETTINGS.__dict__, "skip": ("sync", "quality", "resample")}),
                             workers=2, progress=False)
    assert native.steps["resample"]["rejected"] == {"not 25 fps / 16 kHz": 1}  # the 30 fps input
    assert dict(table(out, "videos", "video, reason"))["demo3_30fps.mp4"] == "not 25 fps / 16 kHz"
    again = prepare_dataset(inputs, out, SETTINGS, workers=2, progress=False)
    assert len(again.clips) == 3 and set(again.computed) == {"resample", "segments", "align", "publish"}
    assert again.computed["align"] == 1  # only the clip of the video rejected in between


def test_two_runs_cannot_share_an_output_folder(prepared, tmp_path):
    inputs, _, _ = prepared
    lock = tmp_path / "out" / ".prepare.lock"
    lock.parent.mkdir()
    holder = subprocess.Popen(  # another process holding the folder's lock, as a running prepare does
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.lockf(f, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(60)", str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match="another `latentsync prepare` is writing"):
            prepare_dataset(inputs, tmp_path / "out", SETTINGS, workers=1, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "out" / "manifest.sqlite").exists()


def test_failures_are_recorded_and_retried_and_truncated_files_rejected(prepared, tmp_path, monkeypatch):
    inputs, _, _ = prepared
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "talk.mp4").write_bytes((inputs / "demo3_30fps.mp4").read_bytes())
    data = (inputs / "cut.mp4").read_bytes()
    (raw / "truncated.mp4").write_bytes(data[: len(data) * 6 // 10])  # a download that stopped part-way

    def crash(ctx, task):
        raise RuntimeError("out of disk")

    monkeypatch.setitem(steps.STEP_FUNCTIONS, "shots", crash)  # steps run in this process: they see the change
    failed = prepare_dataset(raw, tmp_path / "out", SETTINGS, engine="inline", progress=False)
    states = {v: (state, step, reason) for v, state, step, reason in table(tmp_path / "out", "videos", "video, state, step, reason")}
    assert states["talk.mp4"] == ("error", "shots", "error") and failed.clips == []
    assert failed.steps["shots"]["rejected"] == {"error": 1}
    assert states["truncated.mp4"] == ("rejected", "read", "truncated")  # found at once: its frames stop early
    monkeypatch.undo()
    fixed = prepare_dataset(raw, tmp_path / "out", SETTINGS, engine="inline", progress=False)
    assert fixed.computed["shots"] == 1  # failures are retried; finished steps are not
    assert "read" not in fixed.computed and "resample" not in fixed.computed
    states = {v: (state, step, reason) for v, state, step, reason in table(tmp_path / "out", "videos", "video, state, step, reason")}
    assert states["talk.mp4"] == ("done", None, None) and len(fixed.clips) == 1
    assert states["truncated.mp4"] == ("rejected", "read", "truncated")


def test_output_inside_the_input_folder_is_not_taken_as_input(prepared):
    from latentsync.data.prepare.runner import list_videos

    inputs, out, _ = prepared
    inside = inputs / "prepared"
    (inside / "clips").mkdir(parents=True)
    (inside / "clips" / "x.mp4").write_bytes((out / "clips/cut/000000-000049.mp4").read_bytes())
    try:
        assert [v.name for v in list_videos(inputs, inside)] == ["broken.mp4", "cut.mp4", "demo3_30fps.mp4", "noface.mp4"]
    finally:
        (inside / "clips" / "x.mp4").unlink()
