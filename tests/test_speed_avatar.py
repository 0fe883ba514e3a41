"""Prepared avatars: a job with one gives the same video as a normal job; other weights or settings are refused."""

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
from latentsync.face import detect_video_track
from latentsync.pipeline import LipSyncPipeline
from latentsync.pipeline.avatar import Avatar, make_avatar
from latentsync.testing import write_random_models

VIDEO = MEDIA / "demo1_360p.mp4"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    return write_random_models(tmp_path_factory.mktemp("tiny"), "tiny")


@pytest.fixture(scope="module")
def pipe(tiny) -> LipSyncPipeline:
    return LipSyncPipeline.from_pretrained(
        "1.5", unet_config=tiny["unet_config"], unet_checkpoint=tiny["unet"], vae=tiny["vae"],
        whisper=tiny["whisper"], face_backend="mediapipe", offline=True,
    )


def test_avatar_run_equals_normal_run(pipe, tiny, tmp_path):
    speech = save_wav(tmp_path / "speech.wav", load_audio(AUDIO / "demo2_speech.flac")[: int(1.3 * SAMPLE_RATE)])
    track = detect_video_track(VIDEO, pipe.detector())
    normal = pipe(VIDEO, speech, None, num_inference_steps=2, seed=7, track=track, progress=False).frames

    avatar_path = tmp_path / "talk.avatar"
    # Through the command line, as a user makes one (same models, same face backend).
    assert main(["avatar", "--video", str(VIDEO), "--output", str(avatar_path), "--version", "1.5", "--unet-config",
                 str(tiny["unet_config"]), "--unet-checkpoint", str(tiny["unet"]), "--vae", str(tiny["vae"]),
                 "--whisper", str(tiny["whisper"]), "--face-backend", "mediapipe", "--offline", "--quiet",
                 "--device", "cpu"]) == 0
    avatar = Avatar.load(avatar_path)
    np.testing.assert_array_equal(avatar.track.points, track.points)
    assert avatar.latents.dtype == pipe.dtype and len(avatar.latents) == track.present.sum()

    detections = []
    pipe.face_detector, saved = (lambda: detections.append(1)), pipe.face_detector  # any detection would show
    try:
        result = pipe(None, speech, None, num_inference_steps=2, seed=7, avatar=avatar, progress=False)
    finally:
        pipe.face_detector = saved
    assert not detections
    assert result.frames.shape == normal.shape and np.array_equal(result.frames, normal)

    out = tmp_path / "out.mp4"
    assert main(["infer", "--avatar", str(avatar_path), "--audio", str(speech), "--output", str(out), "--version",
                 "1.5", "--unet-config", str(tiny["unet_config"]), "--unet-checkpoint", str(tiny["unet"]), "--vae",
                 str(tiny["vae"]), "--whisper", str(tiny["whisper"]), "--offline", "--quiet", "--device", "cpu",
                 "--steps", "2", "--seed", "7"]) == 0
    assert out.stat().st_size > 0


def test_avatar_refuses_other_weights_or_settings(pipe, tmp_path):
    speech = save_wav(tmp_path / "speech.wav", load_audio(AUDIO / "demo2_speech.flac")[: int(0.5 * SAMPLE_RATE)])
    track = detect_video_track(VIDEO, pipe.detector())
    avatar_path = make_avatar(pipe, VIDEO, tmp_path / "talk.avatar", track=track)

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
