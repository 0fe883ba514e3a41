"""Still photos as input: a portrait photo plus speech gives a talking video as long as the speech, the mouth
regenerated on every frame (tiny random models; photos cut from the demo clips' frames)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import AUDIO, fixture_frames
from latentsync.audio import SAMPLE_RATE, load_audio, save_wav
from latentsync.cli import main
from latentsync.face import FaceTrack
from latentsync.media import probe_video, read_frames
from latentsync.pipeline import LipSyncPipeline
from latentsync.testing import write_random_models

SECONDS = 0.32  # 8 frames at 25 fps
EXIF_ORIENTATION = 0x0112
ROTATE_CLOCKWISE = 6  # EXIF: turn the stored picture 90 degrees clockwise for display


def frame(name: str) -> np.ndarray:
    return fixture_frames(f"{name}_360p.mp4", limit=1)[0]  # 360 x 640 (w x h)


def make_photo(folder: Path, kind: str) -> tuple[Path, np.ndarray]:
    """A photo file cut from a demo frame, and the picture it shows (as displayed)."""
    if kind == "portrait.png":  # odd size: the output is padded by one pixel
        shown = frame("demo2")[0:401, 20:341]
    elif kind == "portrait.jpg":
        shown = frame("demo1")[120:440, 100:300]
    elif kind == "landscape.png":
        shown = frame("demo3")[60:300, 0:360]
    else:  # landscape.jpg, stored upright as a phone does, with an EXIF orientation tag that turns it for display
        shown = frame("demo2")[40:280, 0:360]
    path = folder / kind
    if kind.endswith(".png"):
        Image.fromarray(shown).save(path)
    else:
        stored = Image.fromarray(np.ascontiguousarray(np.rot90(shown))) if kind == "landscape.jpg" else Image.fromarray(shown)
        exif = stored.getexif()
        if kind == "landscape.jpg":
            exif[EXIF_ORIENTATION] = ROTATE_CLOCKWISE
        stored.save(path, quality=95, exif=exif.tobytes())
        shown = np.asarray(Image.open(path).transpose(Image.Transpose.ROTATE_270) if kind == "landscape.jpg"
                           else Image.open(path).convert("RGB"))  # what the JPEG decodes to, as displayed
    return path, shown


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return write_random_models(tmp_path_factory.mktemp("tiny"), "tiny")


@pytest.fixture(scope="module")
def pipe(tiny) -> LipSyncPipeline:
    return LipSyncPipeline.from_pretrained("1.5", unet_config=tiny["unet_config"], unet_checkpoint=tiny["unet"],
                                           vae=tiny["vae"], whisper=tiny["whisper"], face_backend="mediapipe",
                                           offline=True)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    return save_wav(path, load_audio(AUDIO / "demo3_speech.flac")[: int(SECONDS * SAMPLE_RATE)])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["portrait.png", "portrait.jpg", "landscape.png", "landscape.jpg"])
def test_a_photo_talks_for_as_long_as_the_speech(pipe, speech, tmp_path, kind, monkeypatch, one_thread):
    photo, shown = make_photo(tmp_path, kind)
    height, width = shown.shape[:2]
    info = probe_video(photo)
    assert info.still and (info.width, info.height) == (width, height) and info.frames_at() == 1
    before = digest(photo)
    out = tmp_path / "talking.mp4"
    calls = []
    sample_chunk = pipe.sample_chunk

    def spy(faces, audio, *args, **kwargs):
        calls.append((torch.as_tensor(faces).clone(), torch.as_tensor(audio).clone()))
        return sample_chunk(faces, audio, *args, **kwargs)

    monkeypatch.setattr(pipe, "sample_chunk", spy)
    result = pipe(photo, speech, out, num_inference_steps=1, guidance_scale=1.0, seed=0, progress=False,
                  save_track=tmp_path / "track.json")
    report = result.report
    assert report.still and report.video_frames == 1 and report.output_frames == 8
    assert "from a still photo" in report.summary()
    padded = width % 2 or height % 2
    assert bool(report.warnings) == bool(padded)

    written = probe_video(out)
    assert (written.width, written.height) == (width + width % 2, height + height % 2)
    assert written.num_frames == 8 and written.fps == 25.0 and written.has_audio
    frames = np.stack([f for _, f in read_frames(out)])[:, :height, :width].astype(int)

    track = FaceTrack.load(tmp_path / "track.json")
    assert track.num_frames == 1 and track.present.all()
    x0, y0, x1, y1 = track.boxes[0].astype(int)
    mouth = (slice(y0 + (y1 - y0) // 2, y1), slice(x0, x1))  # lower half of the face box
    far = np.ones((height, width), bool)
    far[max(0, 2 * y0 - y1):2 * y1 - y0, max(0, 2 * x0 - x1):2 * x1 - x0] = False  # a face size around the face
    change = np.abs(frames - shown.astype(int))
    assert change[:, far].mean() < 3  # the photo itself, up to codec error
    per_frame = change[:, mouth[0], mouth[1]].mean(axis=(1, 2, 3))
    assert (per_frame > 4 * change[:, far].mean() + 2).all(), per_frame  # every frame's mouth is regenerated
    # The model saw the photo's face on every frame, each with the audio of its own 40 ms.
    (faces, audio), = calls
    assert faces.shape[0] == 8 and all(torch.equal(face, faces[0]) for face in faces)
    assert all(not torch.equal(audio[k], audio[k + 1]) for k in range(7))
    assert digest(photo) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([kind, "talking.mp4", "track.json"])


def test_image_option_on_the_command_line(tiny, speech, tmp_path, capsys, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    photo, shown = make_photo(tmp_path, "portrait.png")
    out = tmp_path / "out.mp4"
    code = main(["infer", "--image", str(photo), "--audio", str(speech), "--output", str(out), "--version", "1.5",
                 "--unet-config", str(tiny["unet_config"]), "--unet-checkpoint", str(tiny["unet"]),
                 "--vae", str(tiny["vae"]), "--whisper", str(tiny["whisper"]), "--face-backend", "mediapipe",
                 "--offline", "--steps", "1", "--guidance", "1.0", "--seed", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = captured.out.splitlines()
    assert summary[0].startswith("8 frames (0.32 s) from a still photo; faces: 1 found")
    assert summary[1] == ("warning: the 321x401 frames are padded by one pixel to 322x402 (the edge repeated): "
                          "H.264 in 4:2:0 needs even sizes")
    assert "faces: 100%" in captured.err and "1/1" in captured.err  # the faces bar has its total
    assert probe_video(out).num_frames == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "portrait.png"]


def test_a_stopped_run_wipes_its_progress_bar(pipe, speech, tmp_path, capsys, one_thread):
    """An error ends the output: the lip-sync bar is cleared, not drawn again below or above the message."""
    photo, _ = make_photo(tmp_path, "portrait.jpg")

    class Stop(Exception):
        pass

    def stop(stage, done, total):
        if stage == "lip-sync" and done:
            raise Stop

    with pytest.raises(Stop):
        pipe(photo, speech, tmp_path / "out.mp4", num_inference_steps=1, guidance_scale=1.0, progress=True,
             on_progress=stop)
    err = capsys.readouterr().err
    assert "faces: 100%" in err and "lip-sync:" in err  # both bars were shown
    last = err[err.rindex("lip-sync:"):]
    assert "\n" not in last and last.split("\r")[-2].strip() == "" and err.endswith("\r")  # then wiped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["portrait.jpg"]
