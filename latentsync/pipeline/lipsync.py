"""LipSyncPipeline: the denoising of one chunk of aligned faces, and the whole video job built on it.

Data flows one way: media in -> face track and audio features -> diffusion per 16-frame chunk -> paste back ->
media out. The chunk step (`sample_chunk`) is the published sampling (SPEC sections 6 and 9) and is checked against
the golden vectors; `__call__` streams a whole video through it with bounded memory (see `stream.py`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..models.vae import decode_latents, encode_latents
from .mask import load_mouth_mask

CHUNK_FRAMES = 16  # frames per U-Net call: the temporal layers were trained on 16 (their encoding allows 24)


class LipSyncPipeline:
    """Audio-driven lip sync with a LatentSync U-Net, a diffusers AutoencoderKL and a diffusers scheduler.

    Build it from components, or with `LipSyncPipeline.from_pretrained("1.6")` for the published weights.
    `audio_encoder` (a `latentsync.audio.WhisperFeatures`) and `face_detector` are needed only for whole videos.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        vae: torch.nn.Module,
        scheduler: Any,
        resolution: int = 256,
        mask: np.ndarray | None = None,
        audio_encoder: Any = None,
        face_detector: Any = None,
    ):
        self.unet = unet.eval()
        self.vae = vae.eval()
        self.scheduler = scheduler
        self.resolution = resolution
        self.audio_encoder = audio_encoder
        self.face_detector = face_detector
        mask = load_mouth_mask(resolution) if mask is None else np.asarray(mask, dtype=np.float32)
        if mask.shape != (resolution, resolution):
            raise ValueError(f"mask must be {resolution}x{resolution}, got {mask.shape}")
        self.mask = torch.from_numpy(mask)[None, None]  # (1,1,R,R), float32 on the CPU until used

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @classmethod
    def from_pretrained(cls, version: str = "1.6", **options: Any) -> "LipSyncPipeline":
        """The published LatentSync `version` ("1.5": 256 px, "1.6": 512 px), every file checked (and fetched)
        before any model is built. Options, any part overridable by a path: see `loading.load_components`
        (checkpoint_dir, offline, device, dtype, unet_config, unet_checkpoint, vae, whisper, resolution,
        face_backend)."""
        from .loading import load_components

        return cls(**load_components(version, **options))

    # ---- one chunk -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample_chunk(
        self,
        faces_uint8: torch.Tensor | np.ndarray,
        audio_windows: torch.Tensor | np.ndarray,
        init_latents: torch.Tensor,
        num_inference_steps: int = 20,
        guidance_scale: float = 1.5,
    ) -> torch.Tensor:
        """Regenerate the lower face of F aligned frames.

        faces_uint8 (F,3,R,R) uint8, audio_windows (F,50,C), init_latents (1,4,1,R/8,R/8) (one frame's noise,
        repeated over the frames) -> (F,3,R,R) float32 pixel values in [-1,1] where only the masked (black) region
        comes from the model.
        """
        device, dtype = self.device, self.dtype
        faces = torch.as_tensor(faces_uint8).to(device)
        num_frames = faces.shape[0]
        pixels = faces.float() / 255.0 * 2.0 - 1.0
        mask = self.mask.to(device)
        # Conditioning, frame by frame: mask channel, latents of the masked face, latents of the reference face.
        masked_latents = encode_latents(self.vae, (pixels * mask).to(dtype))
        reference_latents = encode_latents(self.vae, pixels.to(dtype))
        mask_latent = F.interpolate(mask, size=masked_latents.shape[-2:], mode="nearest").expand(num_frames, -1, -1, -1)
        condition = torch.cat([mask_latent.to(dtype), masked_latents, reference_latents], dim=1)
        condition = rearrange(condition, "(b f) c h w -> b c f h w", b=1)

        audio = torch.as_tensor(audio_windows).to(device, dtype)[None]  # (1,F,50,C)
        guided = guidance_scale > 1.0
        if guided:  # batch order [unconditional, conditional]; unconditional audio is all zeros
            audio = torch.cat([torch.zeros_like(audio), audio])
            condition = torch.cat([condition, condition])

        latents = init_latents.to(device, dtype).expand(-1, -1, num_frames, -1, -1)
        latents = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.scheduler.timesteps:
            model_input = torch.cat([latents, latents]) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            noise = self.unet(torch.cat([model_input, condition], dim=1), t, audio)
            if guided:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise, t, latents).prev_sample

        decoded = decode_latents(self.vae, rearrange(latents, "b c f h w -> (b f) c h w")).float()
        return decoded * (1.0 - mask) + pixels * mask

    # ---- whole videos ----------------------------------------------------------------------------------------

    def __call__(
        self,
        video: str | os.PathLike,
        audio: str | os.PathLike,
        output: str | os.PathLike | None = None,
        options: Any = None,
        **overrides: Any,
    ) -> Path | np.ndarray:
        """Lip-sync `video` to `audio`. Writes `output` and returns its path; with output None returns the frames
        (N,H,W,3) uint8 (meant for short clips: they are held in memory). `options` is a `stream.RunOptions`;
        keyword overrides name its fields (num_inference_steps, guidance_scale, seed, selection, ...)."""
        from dataclasses import replace

        from .stream import RunOptions, run_job

        options = replace(options or RunOptions(), **overrides)
        return run_job(self, video, audio, output, options)
