"""The image autoencoder: Stable Diffusion's `sd-vae-ft-mse` through diffusers' AutoencoderKL.

The published VAE id and its latent scaling live here and nowhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ..errors import CheckpointError

VAE_ID = "stabilityai/sd-vae-ft-mse"
SCALING_FACTOR = 0.18215
SHIFT_FACTOR = 0.0


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
    mean = vae.encode(pixels.to(vae.dtype)).latent_dist.mean
    return (mean - SHIFT_FACTOR) * SCALING_FACTOR


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents (N,4,h,w) -> pixels (N,3,8h,8w), roughly in [-1,1]."""
    return vae.decode((latents / SCALING_FACTOR + SHIFT_FACTOR).to(vae.dtype)).sample
