"""The pieces of the U-Net training objective (SPEC 10): training noise, the one-step clean-latent estimate, and
the pixel-space losses of stage 2 (SyncNet, LPIPS, TREPA); and the SyncNet's own training loss.

Frames are (B, F, 3, H, W) with values in [-1, 1] throughout (the dataset's layout). The frozen models may hold
half-precision weights: inputs are cast to their dtype and every loss is returned in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..models.lpips import LPIPS
from ..models.syncnet import StableSyncNet
from ..models.videomae import VideoMAE


def frame_noise(like: torch.Tensor, alpha: float | None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise for latents (B, C, F, H, W) with unit variance per element, correlated across frames.

    Mixed noise (alpha given): a part shared by all frames (one frame's draw repeated) with std
    sqrt(a^2 / (1 + a^2)) plus an independent part with std sqrt(1 / (1 + a^2)). alpha None: one frame's draw
    repeated over every frame (the published choice when mixed noise is off).
    """
    frame_shape = (*like.shape[:2], 1, *like.shape[3:])
    shared = torch.randn(frame_shape, generator=generator, device=like.device, dtype=like.dtype)
    if alpha is None:
        return shared.expand_as(like).contiguous()
    independent = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    return shared * math.sqrt(alpha**2 / (1 + alpha**2)) + independent * math.sqrt(1 / (1 + alpha**2))


def predicted_x0(noisy: torch.Tensor, noise_pred: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """One DDIM step to t = 0 from an epsilon prediction: (x_t - sqrt(1 - abar) eps) / sqrt(abar).

    `alphas_cumprod`: abar of each clip's timestep, shape (B,).
    """
    abar = alphas_cumprod.to(noisy.device, torch.float32).view(-1, *([1] * (noisy.ndim - 1)))
    return (noisy.float() - (1 - abar).sqrt() * noise_pred.float()) / abar.sqrt()


def lower_half(images: torch.Tensor) -> torch.Tensor:
    """The bottom rows (from H // 2) of images (..., H, W): the mouth region the losses look at."""
    return images[..., images.shape[-2] // 2 :, :]


def syncnet_loss(vision: torch.Tensor, audio: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean BCE loss, scores) for unit embeddings (B, D) and labels (B,) in {0, 1}; computed in fp32.

    The score is the cosine similarity, clamped to [0, 1] only against rounding (both embeddings are >= 0).
    """
    scores = (vision.float() * audio.float()).sum(dim=1).clamp(0.0, 1.0)
    with torch.autocast(vision.device.type, enabled=False):  # BCE is not autocast-safe in fp16
        loss = F.binary_cross_entropy(scores, labels.float())
    return loss, scores


def contrastive_sync_loss(
    vision: torch.Tensor,
    audio: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    other_audio: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over the in-sync pairs of a batch (0 with fewer than two): each clip's frames must pick
    their own mel window among the batch's, and each window its frames, by cosine / `temperature`.

    `other_audio` (B, D): embeddings of off-sync mel windows from the same clips (the dataset's "other_mel"),
    added as further candidates for the frames. Without them nearly every negative comes from another clip, so
    the term can be lowered by recognising the clip (colours, pitch) instead of the sync.

    Unlike the BCE of the cosine, it cannot be lowered by moving every score together, so it keeps the two
    encoders from collapsing onto one shared embedding early in training (see `SyncNetObjective`).
    """
    in_sync = labels > 0.5
    if int(in_sync.sum()) < 2:
        return vision.new_zeros((), dtype=torch.float32)
    logits = vision[in_sync].float() @ audio[in_sync].float().T / temperature
    targets = torch.arange(len(logits), device=logits.device)
    audio_side = F.cross_entropy(logits.T, targets)
    if other_audio is not None:
        logits = torch.cat([logits, vision[in_sync].float() @ other_audio.float().T / temperature], dim=1)
    return (F.cross_entropy(logits, targets) + audio_side) / 2


@dataclass(frozen=True)
class SyncNetObjective:
    """The SyncNet training loss: the published BCE of the cosine, plus `contrastive_weight` times the in-batch
    contrastive term (`run.contrastive_loss_weight`, 0 = the published objective alone).

    Why the extra term: at initialisation the BCE is lowered fastest by moving every cosine towards 0.5 at once
    (a direction shared by all embeddings, which are non-negative after the final ReLU), and a small model then
    sits at chance with every score near 0.5. The contrastive term only rewards telling windows apart.
    """

    contrastive_weight: float = 0.0
    temperature: float = 0.1
    same_clip_negatives: bool = False  # the trainer then feeds `other_audio` (`run.contrastive_same_clip_negatives`)
    logit_scale: float = 0.0  # > 0: BCE with logits logit_scale * (cosine - 0.5) instead (`run.sync_logit_scale`)

    def __call__(
        self, vision: torch.Tensor, audio: torch.Tensor, labels: torch.Tensor, other_audio: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, cosine scores) of a batch; `other_audio`: see `contrastive_sync_loss`.

        With `logit_scale` the decision stays "cosine > 0.5", but the BCE is taken of the logit
        logit_scale * (cosine - 0.5). The published loss pushes every pair, even one scored right, with a gradient
        of at least 1 in the cosine (it never fades: 1 / c for in-sync pairs); this one fades for pairs scored
        right with a margin and leaves the model's capacity to the pairs on the wrong side."""
        loss, scores = syncnet_loss(vision, audio, labels)
        if self.logit_scale:
            logits = self.logit_scale * ((vision.float() * audio.float()).sum(dim=1) - 0.5)
            loss = F.binary_cross_entropy_with_logits(logits, labels.float())
        if self.contrastive_weight:
            term = contrastive_sync_loss(vision, audio, labels, self.temperature, other_audio)
            loss = loss + self.contrastive_weight * term
        return loss, scores


def sync_loss(
    syncnet: StableSyncNet,
    frames: torch.Tensor,
    mel: torch.Tensor,
    resolution: int | None = None,
    use_lower_half: bool = True,
) -> torch.Tensor:
    """Binary cross-entropy of the SyncNet score (cosine of the two embeddings) against "in sync" (1).

    frames (B, F, 3, R, R), mel (B, 1, 80, 52). Frames are first resized (bicubic) to the SyncNet's `resolution`
    when it differs from R, then the lower half of every frame is stacked on channels, as the SyncNet was trained.
    """
    batch = frames.shape[0]
    images = frames.flatten(0, 1)
    if resolution is not None and images.shape[-1] != resolution:
        images = F.interpolate(images, size=(resolution, resolution), mode="bicubic")
    if use_lower_half:
        images = lower_half(images)
    visual = rearrange(images, "(b f) c h w -> b (f c) h w", b=batch)
    dtype = next(syncnet.parameters()).dtype
    vision, audio = syncnet(visual.to(dtype), mel.to(dtype))
    loss, _ = syncnet_loss(vision, audio, torch.ones(batch, device=frames.device))
    return loss


def lpips_loss(lpips: LPIPS, frames: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean LPIPS distance between the lower halves of generated and real frames (B, F, 3, R, R)."""
    dtype = next(lpips.parameters()).dtype
    a, b = (lower_half(x).flatten(0, 1).to(dtype) for x in (frames, target))
    return lpips(a, b).float().mean()


class TREPALoss(nn.Module):
    """Temporal representation alignment: MSE between L2-normalised VideoMAE-v2 features of generated and real clips.

    Each clip's frames are resized to the ViT's input size (bicubic), mapped from [-1, 1] to [0, 1] and clipped;
    the number of frames per clip must be the ViT's (16 for the published model).
    """

    def __init__(self, videomae: VideoMAE):
        super().__init__()
        self.videomae = videomae

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        size = self.videomae.config.image_size
        batch = frames.shape[0]
        images = F.interpolate(frames.flatten(0, 1).float(), size=(size, size), mode="bicubic")
        clips = rearrange((images / 2 + 0.5).clamp(0, 1), "(b f) c h w -> b c f h w", b=batch)
        dtype = next(self.videomae.parameters()).dtype
        return F.normalize(self.videomae(clips.to(dtype)).float(), p=2, dim=1)

    def forward(self, frames: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """frames, target: (B, F, 3, H, W) in [-1, 1] -> scalar loss."""
        return F.mse_loss(self.features(frames), self.features(target))
