"""The whole lip-sync job on real clips with tiny random models in the published formats (CPU, offline face backend)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import AUDIO, MEDIA, unwritable_folder
from latentsync.audio import SAMPLE_RATE, load_audio, save_wav
from latentsync.cli import main
from latentsync.errors import InputError, NoFaceError
from latentsync.face import FaceTrack, create_detector, detect_video_track, track_matrices
from latentsync.media import frame_schedule, read_frames
from latentsync.memory import BufferPool
from latentsync.pipeline import LipSyncPipeline
from latentsync.pipeline import lipsync as lipsync_module
from latentsync.pipeline.threads import BackgroundWorker, prefetch
from latentsync.testing import write_random_models

STEPS = 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return write_random_models(tmp_path_factory.mktemp("tiny"), "tiny")


@pytest.fixture(scope="module")
def pipe(tiny) -> LipSyncPipeline:
    return LipSyncPipeline.from_pretrained(
        "1.5", unet_config=tiny["unet_config"], unet_checkpoint=tiny["unet"], vae=tiny["vae"],
        whisper=tiny["whisper"], face_backend="mediapipe", offline=True,
    )


def write_speech(path: Path, seconds: float) -> Path:
    """The first `seconds` of a real speech track, as a 16 kHz wav."""
    return save_wav(path, load_audio(AUDIO / "demo2_speech.flac")[: int(seconds * SAMPLE_RATE)])


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        info = {"width": v.width, "height": v.height, "fps": float(v.average_rate),
                "audio_seconds": float(a.duration * a.time_base), "video_seconds": float(v.duration * v.time_base)}
        info["frames"] = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    return info


def away_from_face(track: FaceTrack, height: int, width: int) -> np.ndarray:
    """Pixels more than one face size away from every face box of the track."""
    boxes = track.boxes[track.present]
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = boxes[:, 2].max(), boxes[:, 3].max()
    w, h = x1 - x0, y1 - y0
    far = np.ones((height, width), bool)
    far[max(0, int(y0 - h)) : int(y1 + h), max(0, int(x0 - w)) : int(x1 + w)] = False
    return far


def check_output(out: Path, video: Path, seconds: float, track: FaceTrack) -> dict:
    info = probe(out)
    source = [frame for _, frame in read_frames(video)]
    expected_frames = int(seconds * 25)
    assert info["frames"].shape == (expected_frames, len(source[0]), len(source[0][0]), 3)  # input size kept
    assert info["fps"] == 25.0
    assert abs(info["audio_seconds"] - seconds) <= 0.04  # the speech track's duration, within one frame
    assert abs(info["video_seconds"] - info["audio_seconds"]) <= 0.04
    schedule = frame_schedule(len(source), expected_frames)
    far = away_from_face(track, *info["frames"].shape[1:3])
    diff = np.abs(info["frames"].astype(int) - np.stack([source[i] for i in schedule]).astype(int))
    assert diff[:, far].mean() < 2.0  # only codec error away from the face
    near = ~far
    assert diff[:, near].mean() > diff[:, far].mean()  # the face region was regenerated
    return info


def test_cut_when_the_audio_is_shorter(pipe, tmp_path):
    video = MEDIA / "demo1_360p.mp4"  # 2 s, 50 frames
    speech = write_speech(tmp_path / "speech.wav", 1.2)
    out = pipe(video, speech, tmp_path / "out.mp4", num_inference_steps=STEPS, seed=0, progress=False,
               save_track=tmp_path / "track.json").path
    track = FaceTrack.load(tmp_path / "track.json")
    assert track.num_frames == 50 and track.present.all()
    check_output(out, video, 1.2, track)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "speech.wav", "track.json"]  # no temp files


def test_ping_pong_when_the_audio_is_longer_and_30fps_input(pipe, tmp_path):
    video = MEDIA / "demo3_360p.mp4"  # 2 s at 30 fps: 50 frames at 25 fps
    speech = write_speech(tmp_path / "speech.wav", 3.0)
    out = pipe(video, speech, tmp_path / "out.mp4", num_inference_steps=STEPS, seed=0, progress=False,
               save_track=tmp_path / "track.npz").path
    track = FaceTrack.load(tmp_path / "track.npz")
    assert track.num_frames == 50
    check_output(out, video, 3.0, track)
    # Forward 0..49, then the reversed copy 49, 48, ...: output frame 60 shows video frame 39.
    assert frame_schedule(50, 75)[60] == 39


def test_reusing_a_track_and_returning_frames(pipe, tmp_path):
    video = MEDIA / "demo2_360p.mp4"
    speech = write_speech(tmp_path / "speech.wav", 0.64)
    first = pipe(video, speech, None, num_inference_steps=STEPS, seed=3, progress=False, save_track=tmp_path / "t.json").frames
    again = pipe(video, speech, None, num_inference_steps=STEPS, seed=3, progress=False, track=tmp_path / "t.json").frames
    assert first.shape == (16, 640, 360, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)  # same seed, same track: the same frames
    # A track of another video (here: too short) is refused before any generation.
    track = FaceTrack.load(tmp_path / "t.json")
    short = dataclasses.replace(track, **{k: getattr(track, k)[:10] for k in ("present", "interpolated", "points", "boxes")})
    with pytest.raises(InputError, match="the face track has 10 frames, the video has 50"):
        pipe(video, speech, None, progress=False, track=short)


def test_a_video_without_any_face_is_a_clear_error(pipe, tmp_path):
    path = tmp_path / "no face.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(20):
            image = np.full((240, 320, 3), (40 + 5 * i, 90, 140), np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    speech = write_speech(tmp_path / "speech.wav", 0.5)
    with pytest.raises(NoFaceError, match="no face found in any frame"):
        pipe(path, speech, tmp_path / "out.mp4", num_inference_steps=STEPS, progress=False)
    assert not (tmp_path / "out.mp4").exists()


def test_cli_track_then_infer_with_overrides(tiny, tmp_path, capsys):
    video = MEDIA / "demo1_360p.mp4"
    assert main(["track", "--video", str(video), "--output", str(tmp_path / "track.json"),
                 "--face-backend", "mediapipe", "--quiet"]) == 0
    assert FaceTrack.load(tmp_path / "track.json").present.all()
    speech = write_speech(tmp_path / "speech.wav", 0.64)
    out = tmp_path / "cli out.mp4"
    code = main([
        "infer", "--video", str(video), "--audio", str(speech), "--output", str(out),
        "--version", "1.5", "--unet-config", str(tiny["unet_config"]), "--unet-checkpoint", str(tiny["unet"]),
        "--vae", str(tiny["vae"]), "--whisper", str(tiny["whisper"]), "--track", str(tmp_path / "track.json"),
        "--offline", "--steps", str(STEPS), "--seed", "1", "--quiet",
    ])
    assert code == 0
    check_output(out, video, 0.64, FaceTrack.load(tmp_path / "track.json"))


def _bad_input_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    video, speech = MEDIA / "demo1_360p.mp4", write_speech(tmp_path / "speech.wav", 0.5)
    empty_audio = tmp_path / "empty.wav"
    with av.open(str(empty_audio), "w") as out:
        out.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
    no_frames = tmp_path / "no frames.mp4"
    with av.open(str(no_frames), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height = 64, 64
    locked = unwritable_folder(tmp_path)
    out = str(tmp_path / "out.mp4")
    return {
        "missing video": (["--video", str(tmp_path / "nope.mp4"), "--audio", str(speech), "--output", out], "nope.mp4"),
        "not a video": (["--video", str(speech), "--audio", str(speech), "--output", out], "video"),
        "no frames": (["--video", str(no_frames), "--audio", str(speech), "--output", out], "frame"),
        "no audio given": (["--video", str(video), "--output", out], "--audio"),
        "audio without samples": (["--video", str(video), "--audio", str(empty_audio), "--output", out], "audio"),
        "unwritable folder": (["--video", str(video), "--audio", str(speech), "--output", str(locked / "o.mp4")], "writ"),
        "output is the input": (["--video", str(video), "--audio", str(speech), "--output", str(video)], "input"),
    }


def test_bad_inputs_fail_before_any_model_is_loaded(tmp_path, capsys):
    # A U-Net checkpoint that does not exist: had any weights been touched, that error would come first.
    model = ["--unet-checkpoint", str(tmp_path / "missing_unet.pt"), "--offline", "--quiet"]
    for name, (args, needle) in _bad_input_cases(tmp_path).items():
        code = main(["infer", *args, *model])
        err = capsys.readouterr().err
        assert code == 2, name
        assert err.startswith("latentsync: error:") and "Traceback" not in err, (name, err)
        assert needle.lower() in err.lower(), (name, err)
        assert "missing_unet" not in err, (name, err)


@pytest.fixture(scope="module")
def demo3_track() -> FaceTrack:
    with create_detector("mediapipe") as detector:
        return detect_video_track(MEDIA / "demo3_360p.mp4", detector)


def test_ping_pong_chunks_follow_output_positions(pipe, demo3_track, tmp_path, monkeypatch):
    """On the reversed pass too, each chunk takes the audio of its output frames and the matrices of the video
    frames it shows."""
    speech = write_speech(tmp_path / "speech.wav", 3.0)  # 75 output frames from 50 video frames
    windows, paste = pipe.audio_encoder.windows, pipe.aligner.paste
    starts, mats_used = [], []

    def spy_windows(features, num_frames, start=0):
        starts.append((start, num_frames))
        return windows(features, num_frames, start)

    def spy_paste(frames, faces, mats, **options):
        mats_used.append(mats)
        return paste(frames, faces, mats, **options)

    monkeypatch.setattr(pipe.audio_encoder, "windows", spy_windows)
    monkeypatch.setattr(pipe.aligner, "paste", spy_paste)
    result = pipe(MEDIA / "demo3_360p.mp4", speech, None, num_inference_steps=1, seed=0, progress=False,
                  track=demo3_track)
    assert result.frames.shape[0] == 75 and result.path is None
    assert starts == [(0, 16), (16, 16), (32, 16), (48, 16), (64, 11)]
    expected = track_matrices(pipe.aligner, demo3_track)[frame_schedule(50, 75)]
    np.testing.assert_array_equal(np.concatenate(mats_used), expected)


def test_a_job_decodes_into_a_few_reused_chunk_arrays(pipe, demo3_track, tmp_path, monkeypatch):
    """13 chunks pass through at most 8 arrays (decoded, aligned, denoised, pasted in place, encoded, given
    back), and reuse changes no frame: the result equals a run that gets a fresh array for every chunk."""
    pools = []

    class RecordedPool(BufferPool):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self)

    monkeypatch.setattr(lipsync_module, "BufferPool", RecordedPool)
    speech = write_speech(tmp_path / "speech.wav", 8.0)  # 200 output frames: 13 chunks
    options = dict(num_inference_steps=1, seed=0, progress=False, track=demo3_track)
    reused = pipe(MEDIA / "demo3_360p.mp4", speech, None, **options).frames
    assert reused.shape[0] == 200
    assert 1 < pools[0].allocated <= 8

    monkeypatch.setattr(RecordedPool, "give", lambda self, array: None)  # never reuse
    fresh = pipe(MEDIA / "demo3_360p.mp4", speech, None, **options).frames
    assert pools[1].allocated == 13
    np.testing.assert_array_equal(reused, fresh)


def test_progress_callback_sees_every_stage_and_can_stop_the_job(pipe, demo3_track, tmp_path):
    speech = write_speech(tmp_path / "speech.wav", 1.0)
    seen = []

    class Stop(Exception):
        pass

    def on_progress(stage, done, total):
        seen.append((stage, done, total))
        if stage == "lip-sync" and done >= 16:
            raise Stop

    with pytest.raises(Stop):
        pipe(MEDIA / "demo3_360p.mp4", speech, tmp_path / "out.mp4", num_inference_steps=1, progress=False,
             track=demo3_track, on_progress=on_progress)
    assert seen == [("audio", 0, 1), ("audio", 1, 1), ("lip-sync", 16, 25)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav"]  # no output, no temporary file


@pytest.mark.parametrize("stage", ["warp", "paste"])  # the align thread ahead of the model, the paste thread after it
def test_errors_in_background_stages_reach_the_caller(pipe, demo3_track, tmp_path, monkeypatch, stage):
    def broken(*args, **kwargs):
        raise RuntimeError(f"{stage} failed")

    monkeypatch.setattr(pipe.aligner, stage, broken)
    speech = write_speech(tmp_path / "speech.wav", 1.0)
    with pytest.raises(RuntimeError, match=f"{stage} failed"):
        pipe(MEDIA / "demo3_360p.mp4", speech, tmp_path / "out.mp4", num_inference_steps=1, progress=False,
             track=demo3_track)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speech.wav"]


def test_thread_helpers_hand_errors_over():
    def numbers():
        yield 1
        raise ValueError("producer failed")

    got = []
    with pytest.raises(ValueError, match="producer failed"):
        for item in prefetch(numbers(), depth=2):
            got.append(item)
    assert got == [1]

    done = []

    def work(item):
        if item == 2:
            raise KeyError("worker failed")
        done.append(item)

    with pytest.raises(KeyError, match="worker failed"):
        with BackgroundWorker(work) as worker:
            for item in range(5):
                worker.submit(item)
    assert done == [0, 1]  # nothing after the failing item is processed
