"""StableSyncNet (SPEC 8): a visual and an audio encoder mapping 16 mouth frames and their mel window to unit vectors.

Parameter names and shapes equal the published `stable_syncnet.pt`. Each encoder is a `conv_in`, then a list
`down_blocks` of residual blocks (with their strided downsampling conv) and, where the config asks, self-attention
blocks placed right after a residual block, then GroupNorm + ReLU on the final 1 x 1 map.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..checkpoint import build_with_weights, load_state_dict
from ..config import model_section
from ..errors import InputError

GROUPS = 32
NORM_EPS = 1e-6
ATTENTION_HEADS = 8
ENCODER_FIELDS = ("in_channels", "block_out_channels", "downsample_factors", "attn_blocks", "dropout")

Factor = int | Sequence[int]


def _downsample_padding(factor: tuple[int, int]) -> tuple[int, int, int, int]:
    """Zero padding (left, right, top, bottom) before the unpadded stride-`factor` 3x3 conv, as published."""
    if factor[0] == 1:
        return (0, 1, 1, 1)
    if factor[1] == 1:
        return (1, 1, 0, 1)
    return (0, 1, 0, 1)


class ResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a (1x1 when channels change) shortcut, then an optional strided downsampling."""

    def __init__(self, in_channels: int, out_channels: int, downsample_factor: Factor, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, in_channels, eps=NORM_EPS)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(GROUPS, out_channels, eps=NORM_EPS)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        factor = tuple(downsample_factor) if isinstance(downsample_factor, Sequence) else (downsample_factor,) * 2
        if factor == (1, 1):
            self.downsample_conv = None
        else:
            self.downsample_padding = _downsample_padding(factor)
            self.downsample_conv = nn.Conv2d(out_channels, out_channels, 3, stride=factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        x = h + (x if self.conv_shortcut is None else self.conv_shortcut(x))
        if self.downsample_conv is not None:
            x = self.downsample_conv(F.pad(x, self.downsample_padding))
        return x


class AttentionBlock(nn.Module):
    """Self-attention over the pixels of a feature map: GroupNorm, 1x1 conv, pre-LN attention and GEGLU
    feed-forward (each with its residual), 1x1 conv, plus the block input."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        # Registered in the published order, so that state_dict() lists the keys as the checkpoint does.
        self.norm1 = nn.GroupNorm(GROUPS, channels, eps=NORM_EPS)
        self.norm2 = nn.LayerNorm(channels)
        self.norm3 = nn.LayerNorm(channels)
        self.ff = FeedForward(channels, dropout=dropout, activation_fn="geglu")
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.conv_out = nn.Conv2d(channels, channels, 1)
        self.attn = Attention(channels, heads=ATTENTION_HEADS, dim_head=channels // ATTENTION_HEADS, dropout=dropout, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[2]
        h = rearrange(self.conv_in(self.norm1(x)), "b c h w -> b (h w) c")
        h = h + self.attn(self.norm2(h))
        h = h + self.ff(self.norm3(h))
        return x + self.conv_out(rearrange(h, "b (h w) c -> b c h w", h=height))


class DownEncoder(nn.Module):
    """One StableSyncNet branch: a stack of downsampling residual blocks ending on a 1x1 map, flattened."""

    def __init__(
        self,
        in_channels: int,
        block_out_channels: Sequence[int],
        downsample_factors: Sequence[Factor],
        attn_blocks: Sequence[int],
        dropout: float = 0.0,
    ):
        super().__init__()
        if not len(block_out_channels) == len(downsample_factors) == len(attn_blocks):
            raise InputError(
                "SyncNet config: block_out_channels, downsample_factors and attn_blocks differ in length",
                "use a published syncnet config",
            )
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        channels = block_out_channels[0]
        for out_channels, factor, with_attention in zip(block_out_channels, downsample_factors, attn_blocks):
            self.down_blocks.append(ResidualBlock(channels, out_channels, factor, dropout))
            if with_attention:
                self.down_blocks.append(AttentionBlock(out_channels, dropout))
            channels = out_channels
        self.norm_out = nn.GroupNorm(GROUPS, channels, eps=NORM_EPS)
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return F.relu(self.norm_out(x)).flatten(1)


class StableSyncNet(nn.Module):
    """Embeds 16 lower-half face frames (B, 48, 128, 256) in [-1, 1] and their mel window (B, 1, 80, 52).

    Both outputs are L2-normalised; their cosine similarity is the sync score (in sync when > 0.5).
    """

    def __init__(self, audio_encoder: Mapping[str, Any], visual_encoder: Mapping[str, Any]):
        super().__init__()
        self.audio_encoder = DownEncoder(**_encoder_fields(audio_encoder, "audio_encoder"))
        self.visual_encoder = DownEncoder(**_encoder_fields(visual_encoder, "visual_encoder"))

    def forward(self, images: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(vision_embeds, audio_embeds), each (B, D) with unit L2 norm."""
        vision = F.normalize(self.visual_encoder(images), p=2, dim=1)
        audio = F.normalize(self.audio_encoder(mel), p=2, dim=1)
        return vision, audio

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each block's activations in the backward pass instead of storing them (training)."""
        self._set_gradient_checkpointing(True)

    def disable_gradient_checkpointing(self) -> None:
        self._set_gradient_checkpointing(False)

    def _set_gradient_checkpointing(self, enabled: bool) -> None:
        self.audio_encoder.gradient_checkpointing = enabled
        self.visual_encoder.gradient_checkpointing = enabled


def _encoder_fields(section: Mapping[str, Any], name: str) -> dict[str, Any]:
    if not isinstance(section, Mapping):
        raise InputError(f"SyncNet config: `{name}` must be a mapping", "use a published syncnet config")
    unknown = sorted(set(section) - set(ENCODER_FIELDS))
    missing = [f for f in ENCODER_FIELDS[:-1] if f not in section]  # dropout may be left out
    if unknown or missing:
        raise InputError(
            f"SyncNet config `{name}`: unknown fields {unknown}, missing fields {missing}",
            f"expected {', '.join(ENCODER_FIELDS)}",
        )
    return dict(section)


def load_syncnet(
    config: str | os.PathLike | Mapping[str, Any],
    checkpoint: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> StableSyncNet:
    """Build StableSyncNet from a published SyncNet config (YAML path with a `model:` section, or its dict).

    `checkpoint`: a `.pt` ({"state_dict": ...} or bare) / `.safetensors` file, or a state dict; without it the
    weights are random (training from scratch). Returned in eval mode on `device` in `dtype`.
    """
    section = model_section(config)
    missing = [k for k in ("audio_encoder", "visual_encoder") if k not in section]
    if missing:
        raise InputError(f"SyncNet config lacks {missing}", "pass a published config such as configs/syncnet/syncnet_16_pixel_attn.yaml")
    state = load_state_dict(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    model = build_with_weights(
        lambda: StableSyncNet(section["audio_encoder"], section["visual_encoder"]), state, "StableSyncNet", dtype
    )
    return model.to(device=device, dtype=dtype).eval()
