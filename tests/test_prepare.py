"""`latentsync prepare`: raw videos -> aligned clips with their speech, a file list, resumable runs."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil

import av
import numpy as np
import pytest
import torch

from conftest import MEDIA
from latentsync.audio import load_audio
from latentsync.cli import train_cmds
from latentsync.data import prepare
from latentsync.data.datasets import read_fileslist
from latentsync.data.prepare import PrepareSettings, clip_spans, prepare_dataset
from latentsync.errors import InputError
from latentsync.face import FaceTrack
from latentsync.media import probe_video

torch.set_num_threads(1)
SETTINGS = PrepareSettings(resolution=64, min_seconds=2.0, max_seconds=10.0, face_backend="mediapipe")


def make_inputs(folder):
    """The three 6 s demo videos (one at 30 fps) and a damaged file."""
    folder.mkdir()
    for i in (1, 2, 3):
        shutil.copy(MEDIA / f"demo{i}_6s.mp4", folder / f"demo{i}.mp4")
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare")
    inputs = make_inputs(root / "raw")
    report = prepare_dataset(inputs, root / "clips", SETTINGS)
    return inputs, root / "clips", report


def test_clips_are_aligned_25fps_with_matching_16k_audio(prepared):
    _, out, report = prepared
    assert len(report.clips) == 3 and report.written == 3
    for clip in report.clips:
        info = probe_video(clip)
        assert (info.width, info.height, info.fps, info.num_frames) == (64, 64, 25.0, 150)
        with av.open(str(clip)) as container:
            assert container.streams.audio[0].rate == 16000
        audio_seconds = len(load_audio(clip)) / 16000
        assert abs(audio_seconds - info.duration) < 0.04  # within one video frame (AAC frame padding)


def test_clip_audio_is_the_source_speech_without_shift(prepared):
    inputs, _, report = prepared
    clip = next(c for c in report.clips if c.parent.name == "demo1")
    ours, source = load_audio(clip)[:80000], load_audio(inputs / "demo1.mp4")[:80000]
    lags = range(-320, 321, 8)
    best = max(lags, key=lambda s: float(np.dot(np.roll(ours, s), source)))
    assert abs(best) <= 8  # less than a millisecond


def test_fileslist_lists_every_clip(prepared):
    _, out, report = prepared
    assert report.fileslist == out / "fileslist.txt"
    assert read_fileslist(report.fileslist) == report.clips
    assert sorted(read_fileslist(data_dir=out)) == sorted(report.clips)


def test_damaged_video_is_skipped_with_reason(prepared):
    inputs, _, report = prepared
    assert list(report.skipped) == [str(inputs / "broken.mp4")]
    assert report.skipped[str(inputs / "broken.mp4")]


def test_rerun_skips_finished_work(prepared, caplog):
    inputs, out, first = prepared
    mtimes = {c: c.stat().st_mtime_ns for c in first.clips}
    with caplog.at_level(logging.WARNING):
        again = prepare_dataset(inputs, out, SETTINGS)
    assert again.written == 0 and again.reused_videos == 3
    assert again.clips == first.clips
    assert {c: c.stat().st_mtime_ns for c in again.clips} == mtimes
    assert "broken.mp4" in caplog.text  # the damaged input is tried again, and skipped again


def test_interrupted_video_writes_only_missing_clips(prepared):
    inputs, out, first = prepared
    clip = first.clips[0]
    kept = [c for c in first.clips if c != clip]
    mtimes = {c: c.stat().st_mtime_ns for c in kept}
    clip.unlink()
    (clip.parent / "done.json").unlink()  # as if killed while writing this clip
    again = prepare_dataset(inputs, out, SETTINGS)
    assert again.written == 1 and clip.exists()
    assert {c: c.stat().st_mtime_ns for c in kept} == mtimes


def test_other_settings_need_another_folder(prepared):
    inputs, out, _ = prepared
    with pytest.raises(InputError, match="other settings"):
        prepare_dataset(inputs, out, PrepareSettings(resolution=128, face_backend="mediapipe"))


def test_clip_spans_split_long_runs_and_drop_short_ones():
    present = np.zeros(100, bool)
    present[0:5] = True  # too short
    present[10:35] = True  # 25 frames: split into 2 parts of 12 and 13
    present[50:60] = True  # kept whole
    assert clip_spans(present, min_frames=10, max_frames=20) == [(10, 22), (22, 35), (50, 60)]


@pytest.mark.slow
def test_prepare_at_256(tmp_path):
    inputs = tmp_path / "raw"
    inputs.mkdir()
    shutil.copy(MEDIA / "demo2_6s.mp4", inputs / "demo2.mp4")
    report = prepare_dataset(inputs, tmp_path / "clips", PrepareSettings(256, face_backend="mediapipe"))
    info = probe_video(report.clips[0])
    assert (info.width, info.height, info.num_frames) == (256, 256, 150)


def test_output_inside_the_input_folder_is_not_taken_as_input(tmp_path):
    shutil.copy(MEDIA / "demo2_360p.mp4", tmp_path / "demo2.mp4")
    settings = PrepareSettings(64, min_seconds=1.0, face_backend="mediapipe")
    first = prepare_dataset(tmp_path, tmp_path / "clips", settings)
    again = prepare_dataset(tmp_path, tmp_path / "clips", settings)
    assert len(first.clips) == 1 and again.clips == first.clips and again.reused_videos == 1


def test_replaced_input_gets_a_new_face_track(tmp_path, caplog):
    """A saved track.npz that does not fit the video (the input was replaced) is detected again, not trusted."""
    (tmp_path / "raw").mkdir()
    shutil.copy(MEDIA / "demo2_360p.mp4", tmp_path / "raw" / "demo2.mp4")
    settings = PrepareSettings(64, min_seconds=1.0, face_backend="mediapipe")
    first = prepare_dataset(tmp_path / "raw", tmp_path / "clips", settings)
    folder = first.clips[0].parent
    track = FaceTrack.load(folder / "track.npz")
    dataclasses.replace(track, width=2 * track.width).save(folder / "track.npz")
    (folder / "done.json").unlink()
    first.clips[0].unlink()
    with caplog.at_level(logging.INFO, logger="latentsync.data.prepare"):
        again = prepare_dataset(tmp_path / "raw", tmp_path / "clips", settings)
    assert "detecting faces again" in caplog.text
    assert again.written == 1 and FaceTrack.load(folder / "track.npz").width == track.width


def test_failed_detector_start_leaves_the_output_unclaimed(tmp_path, monkeypatch):
    shutil.copy(MEDIA / "demo2_360p.mp4", tmp_path / "demo2.mp4")

    def no_detector(*args):
        raise InputError("no face detector")

    monkeypatch.setattr(prepare, "create_detector", no_detector)
    with pytest.raises(InputError, match="no face detector"):
        prepare_dataset(tmp_path, tmp_path / "clips", PrepareSettings(64, face_backend="insightface"))
    assert not (tmp_path / "clips" / "prepare.json").exists()


@pytest.mark.parametrize("seconds", [(0.01, 0.02), (1.99, 1.99), (3.0, 2.0), (0.0, 2.0)])
def test_settings_need_room_for_a_clip(seconds):
    with pytest.raises(InputError, match="min seconds <= max seconds"):
        PrepareSettings(64, *seconds).check()
    PrepareSettings(64, 0.04, 0.04).check()  # one frame is the least


def test_cli_options_left_out_keep_the_settings_defaults():
    parser = argparse.ArgumentParser()
    train_cmds.register(parser.add_subparsers())
    assert train_cmds.prepare_settings(parser.parse_args(["prepare", "in", "out"])) == PrepareSettings()
    args = parser.parse_args(["prepare", "in", "out", "--max-seconds", "5", "--face-backend", "mediapipe"])
    assert train_cmds.prepare_settings(args) == PrepareSettings(max_seconds=5.0, face_backend="mediapipe")
