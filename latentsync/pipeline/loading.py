"""Assembling the pipeline's components from a published version, with any part overridden by a path."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .. import weights
from ..config import load_config
from ..errors import InputError
from ..packaged import packaged_file
from .job import check_model_options

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def packaged_unet_config(version: str) -> Path:
    """The U-Net YAML shipped for a published version (1.5: stage2.yaml at 256 px, 1.6: stage2_512.yaml)."""
    return packaged_file(f"configs/unet/{weights.get_version(version).unet_config}")


def load_components(
    version: str,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    offline: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    unet_config: str | os.PathLike | None = None,
    unet_checkpoint: str | os.PathLike | None = None,
    vae: str | os.PathLike | None = None,
    whisper: str | os.PathLike | None = None,
    resolution: int | None = None,
    face_backend: str = "auto",
) -> dict[str, Any]:
    """Keyword arguments for LipSyncPipeline: every file is checked (and fetched) before any model is built.

    checkpoint_dir: weights in the published `checkpoints/` layout (default: the caches); offline: never download;
    device, dtype: where and in what precision the models run (Whisper stays float32); unet_config,
    unet_checkpoint, vae, whisper: local overrides of the published parts (a U-Net YAML, a .pt/.safetensors, a
    diffusers VAE folder or Hub id, an openai-whisper file); resolution: face size (default: the config's
    `data.resolution`); face_backend: "auto", "insightface" or "mediapipe".
    """
    from ..audio import WhisperFeatures
    from ..face.detectors import BACKENDS, create_detector
    from ..models import load_scheduler, load_unet, load_vae

    if face_backend not in BACKENDS:
        raise InputError(f"unknown face detector backend {face_backend!r}", f"choose one of {', '.join(BACKENDS)}")
    check_model_options(resolution, device)
    device = _torch_device(device)
    if dtype not in DTYPES:
        raise InputError(f"unsupported model precision {dtype!r}", "use torch.float32, torch.float16 or torch.bfloat16")
    version_info = weights.get_version(version)
    needed = [name for name, override in (("unet", unet_checkpoint), ("whisper", whisper), ("vae", vae)) if override is None]
    if face_backend == "insightface":  # fetched (or found missing) now, not after the audio is encoded
        needed.append("face")
    paths = weights.resolve(needed, version, checkpoint_dir, offline) if needed else {}
    config = load_config(unet_config or packaged_unet_config(version))  # read once: the model and the resolution
    if resolution is None:
        resolution = (config.get("data") or {}).get("resolution", version_info.resolution)
        check_model_options(resolution)  # a config's value must fit the VAE and U-Net too
    # The detector is built when a video first needs detection (never, with a saved face track).
    detector = partial(create_detector, face_backend, checkpoint_dir=checkpoint_dir, device=str(device), offline=offline,
                       version=version)
    return {
        "unet": load_unet(config, unet_checkpoint or paths["unet"], device=device, dtype=dtype),
        "vae": load_vae(vae or paths["vae"], device=device, dtype=dtype, offline=offline),
        "scheduler": load_scheduler(),
        "resolution": resolution,
        # Whisper stays in float32: it is small, and its features feed every frame.
        "audio_encoder": WhisperFeatures(whisper or paths["whisper"], device=device),
        "face_detector": detector,
    }


def _torch_device(device: str | torch.device) -> torch.device:
    """The device named (InputError for a name torch does not know)."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r}", "use cpu, cuda, cuda:N (a GPU number) or mps") from exc
