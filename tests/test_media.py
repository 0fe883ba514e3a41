"""Media layer: probing, 25 fps resampling, rotation, containers, ping-pong reading, the H.264 writer, path checks."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from latentsync.audio import load_audio
from latentsync.errors import InputError
from latentsync.media import VideoWriter, check_output_path, frame_schedule, probe_video, read_frames
from latentsync.media import video as video_module
from latentsync.media.video import rotate_frame

from conftest import AUDIO, MEDIA, psnr, unwritable_folder

DEMO1 = MEDIA / "demo1_360p.mp4"  # 2 s, 25 fps, 360x640
DEMO3 = MEDIA / "demo3_360p.mp4"  # 2 s, 30 fps
SPEECH = AUDIO / "demo1_speech.flac"  # 9.6 s


def decode_all(path: Path) -> list[np.ndarray]:
    """Every frame of the file as RGB, straight from PyAV (the reference the reader is checked against)."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def encode(path: Path, frames, codec="libx264", pts=None, time_base=None, options=None, rotation=None, tag=None):
    """Write RGB frames with PyAV: optional explicit timestamps, display rotation (counter-clockwise) or rotate tag."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25, options=options or {})
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if time_base is not None:
            stream.codec_context.time_base = time_base
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if tag is not None:
            stream.metadata["rotate"] = tag
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i if pts is None else int(pts[i])
            frame.time_base = time_base or Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def gray_frames(count: int, size=(64, 64)) -> list[np.ndarray]:
    """Uniform frames whose grey level encodes their number (10 + 7 j), robust to compression."""
    return [np.full((*size, 3), 10 + 7 * j, dtype=np.uint8) for j in range(count)]


def frame_numbers(frames) -> list[int]:
    return [int(round((f.mean() - 10) / 7)) for f in frames]


@pytest.fixture
def spy_stores(monkeypatch) -> list:
    """Records every frame store read_frames creates, to inspect the decoding work and cache size."""
    stores = []

    class Spy(video_module._FrameStore):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr(video_module, "_FrameStore", Spy)
    return stores


# --- probing and reading -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, fps, frames", [("demo1", 25.0, 50), ("demo2", 25.0, 50), ("demo3", 30.0, 60)])
def test_probe_fixtures(name, fps, frames):
    info = probe_video(MEDIA / f"{name}_360p.mp4")
    assert (info.width, info.height, info.rotation) == (360, 640, 0)
    assert info.fps == pytest.approx(fps)
    assert info.num_frames == frames
    assert info.duration == pytest.approx(2.0)
    assert info.has_audio and info.codec == "h264"
    assert info.frames_at(25.0) == 50


def test_read_25fps_gives_every_frame():
    got = list(read_frames(DEMO1))
    direct = decode_all(DEMO1)
    assert [i for i, _ in got] == list(range(50))
    assert all(np.array_equal(frame, ref) for (_, frame), ref in zip(got, direct, strict=True))


def test_read_30fps_resampled_to_25():
    got = [frame for _, frame in read_frames(DEMO3, fps=25.0)]
    direct = decode_all(DEMO3)
    assert len(got) == 50 == round(2.0 * 25)
    # output k is at k / 25 s; the nearest 30 fps frame is round(k * 30 / 25) (never a tie for these rates)
    assert all(np.array_equal(got[k], direct[round(k * 1.2)]) for k in range(50))


def test_variable_frame_rate_picks_nearest_frame(tmp_path):
    steps = np.array([40, 20, 60, 33, 47, 80, 25, 25, 40, 10, 70] * 3)
    pts = np.concatenate([[0], np.cumsum(steps)[:-1]])  # milliseconds
    frames = gray_frames(len(pts))
    path = encode(tmp_path / "vfr.mkv", frames, pts=pts, time_base=Fraction(1, 1000), options={"crf": "0"})
    info = probe_video(path)
    assert info.num_frames == len(pts)
    assert info.duration == pytest.approx((pts[-1] + 40) / 1000)  # the muxer gives the last frame 1/25 s
    got = frame_numbers(frame for _, frame in read_frames(path))
    # nearest frame in exact milliseconds (output k is at 40 k ms); argmin takes the earlier frame on a tie
    expected = [int(np.argmin(np.abs(pts - 40 * k))) for k in range(info.frames_at(25.0))]
    assert got == expected
    assert got[20] == 19  # 800 ms lies exactly between frames 19 (780 ms) and 20 (820 ms)
    assert len(set(got)) < len(pts)  # some frames were dropped, some repeated: the test is not trivial


@pytest.mark.parametrize(
    "suffix, codec, options",
    [
        (".mkv", "libx264", {}),
        (".webm", "libvpx-vp9", {"deadline": "realtime", "cpu-used": "8"}),
        (".mov", "libx264", {}),
        (".avi", "mjpeg", {}),
        (".avi", "mpeg4", {"bf": "2"}),  # B-frames: packets out of presentation order
    ],
)
def test_other_containers_read_back(tmp_path, suffix, codec, options):
    source = [frame for _, frame in read_frames(DEMO1, indices=range(12))]
    path = encode(tmp_path / f"clip{suffix}", source, codec=codec, options=options)
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames, info.frames_at()) == (360, 640, 12, 12)
    assert info.fps == pytest.approx(25.0)
    got = [frame for _, frame in read_frames(path)]
    assert len(got) == 12
    for k, frame in enumerate(got):
        scores = [psnr(frame, ref) for ref in source]
        assert int(np.argmax(scores)) == k and scores[k] > 30


@pytest.mark.parametrize("clockwise", [90, 180, 270])
def test_rotation_from_display_matrix(tmp_path, clockwise):
    stored = np.zeros((32, 64, 3), dtype=np.uint8)
    stored[:8, :16] = 255  # marks the stored picture's top-left corner
    path = encode(tmp_path / "rotated.mp4", [stored] * 3, rotation=-clockwise)  # PyAV takes counter-clockwise
    info = probe_video(path)
    assert info.rotation == clockwise
    assert (info.width, info.height) == ((32, 64) if clockwise != 180 else (64, 32))
    frame = next(read_frames(path))[1]
    assert frame.shape == (info.height, info.width, 3)
    assert np.abs(frame.astype(int) - rotate_frame(stored, clockwise)).max() < 40
    # OpenCV's own FFmpeg build, with auto-rotation, as an independent reference for the direction
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    assert capture.get(cv2.CAP_PROP_ORIENTATION_META) == clockwise
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    ok, bgr = capture.read()
    capture.release()
    assert ok and np.abs(frame.astype(int) - bgr[..., ::-1]).max() < 40


def test_rotation_from_legacy_rotate_tag(tmp_path):
    stored = np.zeros((32, 64, 3), dtype=np.uint8)
    path = encode(tmp_path / "tagged.mkv", [stored] * 2, tag="90")
    info = probe_video(path)
    assert (info.rotation, info.width, info.height) == (90, 32, 64)


def test_rotate_frame_direction():
    image = np.arange(6).reshape(2, 3, 1)  # [[0 1 2], [3 4 5]]
    assert rotate_frame(image, 90)[..., 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert rotate_frame(image, 180)[..., 0].tolist() == [[5, 4, 3], [2, 1, 0]]
    assert rotate_frame(image, 270)[..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]
    assert rotate_frame(image, 0) is image


# --- schedule and out-of-order reading -----------------------------------------------------------------------------


def test_frame_schedule_small_cases():
    assert frame_schedule(5, 3).tolist() == [0, 1, 2]  # cut
    assert frame_schedule(3, 3).tolist() == [0, 1, 2]  # exact
    assert frame_schedule(3, 9).tolist() == [0, 1, 2, 2, 1, 0, 0, 1, 2]  # published: whole reversed copies
    assert frame_schedule(2, 5).tolist() == [0, 1, 1, 0, 0]
    assert frame_schedule(1, 4).tolist() == [0, 0, 0, 0]
    assert frame_schedule(4, 0).tolist() == []
    with pytest.raises(ValueError):
        frame_schedule(0, 4)


def test_frame_schedule_long():
    n, m = 50, 1000
    s = frame_schedule(n, m)
    assert len(s) == m and s.min() == 0 and s.max() == n - 1
    assert set(np.abs(np.diff(s)).tolist()) == {0, 1}  # one frame at a time, holding only at the turns
    holds = np.flatnonzero(np.diff(s) == 0)
    assert holds.tolist() == list(range(n - 1, m - 1, n)) and set(s[holds].tolist()) == {0, n - 1}
    assert s[:n].tolist() == list(range(n)) and s[n : 2 * n].tolist() == list(range(n - 1, -1, -1))
    assert frame_schedule(n, 30).tolist() == list(range(30))


def test_pingpong_read_matches_full_decode_with_bounded_memory(spy_stores):
    full = [frame for _, frame in read_frames(DEMO1)]  # 50 frames
    schedule = frame_schedule(len(full), 240)  # 9.6 s of speech
    got = []
    for index, frame in read_frames(DEMO1, indices=schedule, cache_frames=8):
        got.append(index)
        assert np.array_equal(frame, full[index])
    assert got == schedule.tolist()
    store = spy_stores[-1]
    assert store.peak_cached == 8  # never more than 8 decoded frames held, out of 50
    # Without usable timestamps (the current fixtures have none) each backward block restarts from the start; still far
    # below decoding from the start for every backward frame (about 2,600 decodes here).
    assert store.decoded < 600


def test_pingpong_read_seeks_instead_of_restarting(tmp_path, spy_stores):
    source = gray_frames(33)
    path = encode(tmp_path / "gop5.mp4", source, options={"crf": "0", "g": "5"})  # a keyframe every 5 frames
    full = [frame for _, frame in read_frames(path)]
    assert frame_numbers(full) == list(range(33))
    schedule = frame_schedule(33, 200)
    got = list(read_frames(path, indices=schedule, cache_frames=4))
    assert all(np.array_equal(frame, full[index]) for index, frame in got)
    store = spy_stores[-1]
    assert store.peak_cached == 4
    assert store.decoded < 1.3 * len(schedule)  # each backward block decodes at most one extra GOP
    backward = [frame for _, frame in read_frames(path, indices=range(32, -1, -1), cache_frames=4)]
    assert frame_numbers(backward) == list(range(32, -1, -1))
    assert spy_stores[-1].decoded < 3 * 33


def test_read_rejects_indices_outside_the_video():
    with pytest.raises(ValueError, match="outside"):
        next(read_frames(DEMO1, indices=[0, 50]))


# --- writer ---------------------------------------------------------------------------------------------------------


def test_writer_output_matches_frames_and_speech(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    speech = load_audio(SPEECH)
    frames = np.stack([frame for _, frame in read_frames(DEMO1)])
    schedule = frame_schedule(len(frames), int(np.ceil(len(speech) / 16000 * 25)))  # 240 frames
    out = tmp_path / "result.mp4"
    with VideoWriter(out, 360, 640, fps=25.0, audio=speech, crf=18) as writer:
        for start in range(0, len(schedule), 16):  # chunks, as the pipeline writes them
            writer.write(frames[schedule[start : start + 16]])
    assert sorted(os.listdir(tmp_path)) == ["cwd", "result.mp4"]  # no temporary file left beside it
    assert os.listdir(cwd) == []  # nothing written to the working directory

    info = probe_video(out)
    assert (info.width, info.height, info.fps, info.num_frames) == (360, 640, 25.0, 240)
    decoded = [frame for _, frame in read_frames(out)]
    assert len(decoded) == 240
    assert min(psnr(decoded[k], frames[schedule[k]]) for k in range(0, 240, 7)) > 35

    with av.open(str(out)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        video_seconds = float(video.duration * video.time_base)
        audio_seconds = float(audio.duration * audio.time_base)
        assert audio.codec_context.name == "aac"
        samples = np.concatenate([f.to_ndarray()[0] for f in container.decode(audio)])
    speech_seconds = len(speech) / 16000
    assert abs(audio_seconds - speech_seconds) <= 0.04
    assert abs(video_seconds - audio_seconds) <= 0.04
    assert abs(len(samples) / 16000 - speech_seconds) <= 0.04
    # the speech itself survives AAC, in place (no offset)
    n = min(len(samples), len(speech))
    assert np.corrcoef(samples[:n], speech[:n])[0, 1] > 0.9


def test_writer_copies_frames_so_the_caller_can_reuse_its_array(tmp_path):
    """The pipeline decodes every chunk into the same few arrays: the writer must have taken its copy when
    `write` returns, even while frames still wait in its queue."""
    frames = gray_frames(12)
    buffer = np.empty_like(frames[0])
    out = tmp_path / "reused.mp4"
    with VideoWriter(out, 64, 64, preset="ultrafast", crf=0) as writer:
        for frame in frames:
            buffer[:] = frame
            writer.write(buffer)
        buffer[:] = 0
    assert frame_numbers([frame for _, frame in read_frames(out)]) == list(range(12))


def test_writer_audio_from_file_with_unicode_path(tmp_path):
    frames = [frame for _, frame in read_frames(DEMO1, indices=range(30))]  # 1.2 s of video, 2 s of audio
    out = tmp_path / "dossier ünïcødé ✓" / "vidéo de test 1.mov"
    check_output_path(out, DEMO1)
    with VideoWriter(out, 360, 640, audio=DEMO1, preset="ultrafast") as writer:
        for frame in frames:
            writer.write(frame)
    assert os.listdir(out.parent) == [out.name]
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        assert audio.rate == 44100  # the file's own rate is kept
        assert float(audio.duration * audio.time_base) == pytest.approx(1.2, abs=0.04)
        assert container.streams.video[0].frames == 30


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_writer_pads_odd_sizes(tmp_path, suffix):
    height, width = 75, 101
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    frame = np.broadcast_to(np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2), (height, width, 3))
    frame = frame.astype(np.uint8)
    out = tmp_path / f"odd{suffix}"
    with VideoWriter(out, width, height, preset="ultrafast") as writer:
        writer.write(np.stack([frame] * 5))
    info = probe_video(out)
    assert (info.width, info.height, info.frames_at()) == (102, 76, 5)  # one column and one row added
    decoded = next(read_frames(out))[1]
    assert psnr(decoded[:height, :width], frame) > 35
    assert np.abs(decoded[:, -1].astype(int) - decoded[:, -2]).max() <= 6  # the padding repeats the edge


def test_writer_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "result.mp4"
    frame = np.zeros((64, 64, 3), dtype=np.uint8)
    with pytest.raises(RuntimeError, match="model failed"):
        with VideoWriter(out, 64, 64, audio=np.zeros(16000, dtype=np.float32)) as writer:
            writer.write(frame)
            raise RuntimeError("model failed")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="shape"):
        with VideoWriter(out, 64, 64) as writer:
            writer.write(np.zeros((64, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(out, 64, 64):
            pass
    assert os.listdir(tmp_path) == []


# --- errors ---------------------------------------------------------------------------------------------------------


def test_probe_rejects_non_videos(tmp_path):
    wav = tmp_path / "speech.wav"
    with av.open(str(wav), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    no_frames = tmp_path / "empty.mp4"
    with av.open(str(no_frames), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()  # header only, no frame
    junk = tmp_path / "junk.mkv"  # a video stream whose packets decode to nothing
    with av.open(str(junk), "w") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuvj420p"
        for i in range(3):
            packet = av.Packet(b"\x00junk" * 50)
            packet.stream, packet.pts, packet.dts = stream, i, i
            container.mux(packet)
    cases = {
        tmp_path / "missing.mp4": "not found",
        tmp_path: "directory",
        wav: "no video stream",
        text: "cannot read",
        no_frames: "no video stream",
        junk: "no decodable frames",
    }
    for path, message in cases.items():
        with pytest.raises(InputError, match=message) as caught:
            probe_video(path)
        assert caught.value.hint
        with pytest.raises(InputError):
            next(read_frames(path))


def test_check_output_path(tmp_path):
    video = tmp_path / "in.mp4"
    video.write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "folder.mp4").mkdir()
    link = tmp_path / "link.mp4"
    link.symlink_to(video)
    hard = tmp_path / "hard.mp4"
    os.link(video, hard)
    for same in (video, tmp_path / "sub" / ".." / "in.mp4", link, hard):
        with pytest.raises(InputError, match="same file"):
            check_output_path(same, SPEECH, video)
    with pytest.raises(InputError, match="video file"):
        check_output_path(tmp_path / "out.gif", video)
    with pytest.raises(InputError, match="directory"):
        check_output_path(tmp_path / "folder.mp4", video)
    with pytest.raises(InputError, match="is a file"):
        check_output_path(tmp_path / "in.mp4" / "deeper" / "out.mp4", SPEECH)
    new = tmp_path / "new" / "folder" / "out.MKV"
    assert check_output_path(new, video, SPEECH) == new
    assert not new.parent.exists()  # the check touches nothing


def test_check_output_path_unwritable_folder(tmp_path):
    with pytest.raises(InputError, match="not writable"):
        check_output_path(unwritable_folder(tmp_path) / "out.mp4")


def test_a_cut_off_file_reads_the_frames_that_decode(tmp_path):
    """An mp4 with its index in front, cut part way: the probe compares the index with what decodes, and the
    reader yields exactly the decodable frames, as stored."""
    whole = tmp_path / "whole.mp4"
    with av.open(str(DEMO1)) as source, av.open(str(whole), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    complete = probe_video(whole)
    assert not complete.truncated and complete.listed_frames is None and complete.num_frames == 50
    info = probe_video(cut)
    assert info.truncated and info.listed_frames == 50 and 30 < info.num_frames < 50
    frames = [frame for _, frame in read_frames(cut)]
    assert len(frames) == info.frames_at() == info.num_frames  # 25 fps in, one frame each
    reference = decode_all(DEMO1)[: len(frames)]
    assert min(psnr(a, b) for a, b in zip(frames, reference)) == float("inf")  # the very pictures, in order
    cut.write_bytes(data[:2000])  # not even the first picture
    with pytest.raises(InputError, match="no decodable frames of the 50 its index lists") as caught:
        probe_video(cut)
    assert "complete copy" in caught.value.hint


def test_photos_are_stills_shown_upright(tmp_path):
    from PIL import Image

    picture = decode_all(DEMO1)[0][100:341, 40:301]  # 261 x 241
    Image.fromarray(picture).save(tmp_path / "photo.png")
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(picture)))  # as a phone stores a turned picture
    exif = stored.getexif()
    exif[0x0112] = 6  # EXIF orientation: turn 90 degrees clockwise to display
    stored.save(tmp_path / "photo.jpg", quality=95, exif=exif.tobytes())
    for name in ("photo.png", "photo.jpg"):
        info = probe_video(tmp_path / name)
        assert info.still and not info.truncated and (info.width, info.height) == (261, 241)
        assert info.frames_at(25) == info.frames_at(60) == 1
        (index, frame), = list(read_frames(tmp_path / name))
        assert index == 0 and frame.shape == (241, 261, 3)
        assert psnr(frame, picture) > (99 if name.endswith(".png") else 30)
    assert not probe_video(DEMO1).still
