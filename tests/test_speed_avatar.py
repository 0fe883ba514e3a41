"""Prepared avatars: a job with one gives the same video as a normal job; other weights or settings are refused.
Several chunks per U-Net call give the same video too."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import AUDIO, MEDIA
from latentsync.audio import SAMPLE_RATE, load_audio, save_wav
from latentsync.cli import main
from latentsync.errors import InputError
from latentsync.face import FaceTrack, detect_video_track
from latentsync.pipeline import LipSyncPipeline
from latentsync.pipeline.avatar import Avatar, make_avatar
from latentsync.testing import write_random_models

VIDEO = MEDIA / "demo1_360p.mp4"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return write_random_models(tmp_path_factory.mktemp("tiny"), "tiny")


@pytest.fixture(scope="module")
def pipe(tiny, one_thread) -> LipSyncPipeline:
    return LipSyncPipeline.from_pretrained(
        "1.5", unet_config=tiny["unet_config"], unet_checkpoint=tiny["unet"], vae=tiny["vae"],
        whisper=tiny["whisper"], face_backend="mediapipe", offline=True,
    )


@pytest.fixture(scope="module")
def track(pipe, tmp_path_factory) -> Path:
    """The face track of the clip, detected once and saved."""
    return detect_video_track(VIDEO, pipe.detector()).save(tmp_path_factory.mktemp("track") / "track.npz")


def model_args(tiny: dict[str, Path]) -> list[str]:
    return ["--version", "1.5", "--unet-config", str(tiny["unet_config"]), "--unet-checkpoint", str(tiny["unet"]),
            "--vae", str(tiny["vae"]), "--whisper", str(tiny["whisper"]), "--offline", "--device", "cpu"]


def test_avatar_run_equals_normal_run(pipe, tiny, track, tmp_path):
    speech = save_wav(tmp_path / "speech.wav", load_audio(AUDIO / "demo2_speech.flac")[: int(1.3 * SAMPLE_RATE)])
    normal = pipe(VIDEO, speech, None, num_inference_steps=2, seed=7, track=track, progress=False).frames

    avatar_path = tmp_path / "talk.avatar"
    # Through the command line, as a user makes one (same models; the saved track instead of detecting again).
    assert main(["avatar", "--video", str(VIDEO), "--output", str(avatar_path), "--track", str(track), "--quiet",
                 *model_args(tiny)]) == 0
    avatar = Avatar.load(avatar_path)
    np.testing.assert_array_equal(avatar.track.points, FaceTrack.load(track).points)
    assert avatar.latents.dtype == pipe.dtype and len(avatar.latents) == avatar.track.present.sum()

    detections = []
    pipe.face_detector, saved = (lambda: detections.append(1)), pipe.face_detector  # any detection would show
    try:
        result = pipe(None, speech, None, num_inference_steps=2, seed=7, avatar=avatar, progress=False)
    finally:
        pipe.face_detector = saved
    assert not detections
    assert result.frames.shape == normal.shape and np.array_equal(result.frames, normal)

    # Both chunks through the U-Net in one call: the same video, up to float rounding of a larger batch.
    batched = pipe(VIDEO, speech, None, num_inference_steps=2, seed=7, track=track, progress=False, batch_chunks=2)
    difference = np.abs(batched.frames.astype(int) - normal.astype(int))
    print(f"batch_chunks=2 vs 1: max {difference.max()}, {(difference > 0).mean():.2e} of values differ")
    assert difference.max() <= 1



def test_avatar_refuses_other_weights_or_settings(pipe, tiny, track, tmp_path, capsys):
    speech = save_wav(tmp_path / "speech.wav", load_audio(AUDIO / "demo2_speech.flac")[: int(0.5 * SAMPLE_RATE)])
    avatar_path = make_avatar(pipe, VIDEO, tmp_path / "talk.avatar", track=track)
    # Made at 64 px; the command line at another face resolution refuses it with the fix, writing nothing.
    out = tmp_path / "out.mp4"
    assert main(["infer", "--avatar", str(avatar_path), "--audio", str(speech), "--output", str(out), "--quiet",
                 "--resolution", "128", *model_args(tiny)]) == 2
    error = capsys.readouterr().err
    assert "other weights or settings: face resolution 64 (now 128)" in error and "latentsync avatar" in error
    assert not out.exists()

    other_vae = copy.deepcopy(pipe.vae)
    with torch.no_grad():
        other_vae.encoder.conv_in.weight[0, 0, 0, 0] += 0.01  # one weight differs
    other = LipSyncPipeline(unet=pipe.unet, vae=other_vae, scheduler=pipe.scheduler, resolution=pipe.resolution,
                            audio_encoder=pipe.audio_encoder)
    with pytest.raises(InputError, match="other weights or settings: VAE weights") as info:
        other(None, speech, None, avatar=avatar_path, progress=False)
    assert "latentsync avatar" in info.value.hint

    half = LipSyncPipeline(unet=copy.deepcopy(pipe.unet).bfloat16(), vae=copy.deepcopy(pipe.vae).bfloat16(),
                           scheduler=pipe.scheduler, resolution=pipe.resolution, audio_encoder=pipe.audio_encoder)
    with pytest.raises(InputError, match="precision float32 \\(now bfloat16\\)"):
        half(None, speech, None, avatar=avatar_path, progress=False)

    with pytest.raises(InputError, match="avatar already holds its video"):
        pipe(VIDEO, speech, None, avatar=avatar_path, progress=False)
    with pytest.raises(InputError, match="avatar file not found"):
        pipe(None, speech, None, avatar=tmp_path / "missing.avatar", progress=False)
