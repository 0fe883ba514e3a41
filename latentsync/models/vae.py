"""The image autoencoder: Stable Diffusion's `sd-vae-ft-mse` through diffusers' AutoencoderKL.

Its latent scaling lives here and nowhere else (its Hub id with the other weight sources, in latentsync.weights).
Latents are the posterior mean times the scaling factor (the published shift is 0).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ..errors import CheckpointError
from ..weights import VAE_REPO as VAE_ID

SCALING_FACTOR = 0.18215


def load_vae(source: str | os.PathLike = VAE_ID, *, device="cpu", dtype=torch.float32, offline: bool = False) -> AutoencoderKL:
    """An AutoencoderKL from a diffusers folder (config.json + weights) or a Hub id."""
    local = Path(source).expanduser()
    if not local.is_dir() and (local.exists() or local.is_absolute() or str(source).startswith(".")):
        raise CheckpointError(f"VAE folder not found: {source}", "pass a diffusers AutoencoderKL folder or a Hub id")
    try:
        vae = AutoencoderKL.from_pretrained(
            str(local) if local.is_dir() else str(source), torch_dtype=dtype, local_files_only=offline, low_cpu_mem_usage=False
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the VAE from {source}: {exc}", "check the folder holds config.json and the weights") from exc
    return vae.to(device).eval().requires_grad_(False)


def encode_latents(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels (N,3,H,W) in [-1,1] -> scaled latents (N,4,H/8,W/8), from the posterior mean (deterministic)."""
    return vae.encode(pixels.to(vae.dtype)).latent_dist.mean * SCALING_FACTOR


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (N,4,h,w) -> pixels (N,3,8h,8w), roughly in [-1,1]."""
    return vae.decode((latents / SCALING_FACTOR).to(vae.dtype)).sample
