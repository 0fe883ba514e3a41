"""The temporal ("motion") module of the U-Net, in the AnimateDiff layout of the published checkpoint.

It mixes information across the frames of a clip: every spatial position attends over the frames at that
position. The module is a residual branch; with `proj_out` zero-initialised a fresh module is the identity.

Parameter names follow the checkpoint:
`temporal_transformer.{norm, proj_in, transformer_blocks.N.{attention_blocks.K, norms.K, ff, ff_norm}, proj_out}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import nn


@dataclass(frozen=True)
class MotionModuleConfig:
    """The published `motion_module_kwargs` (AnimateDiff "Vanilla" module)."""

    num_attention_heads: int = 8
    num_transformer_block: int = 1
    num_attention_blocks: int = 2  # length of `attention_block_types`, all "Temporal_Self"
    temporal_position_encoding: bool = True
    temporal_position_encoding_max_len: int = 24
    temporal_attention_dim_div: int = 1
    zero_initialize: bool = True


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """The standard position table (1, length, dim): sin at even channels, cos at odd ones, base 10000."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, length, dim)
    table[0, :, 0::2] = torch.sin(position * frequency)
    table[0, :, 1::2] = torch.cos(position * frequency)
    return table


class PositionEncoding(nn.Module):
    """Adds the fixed sinusoidal table to a (N, frames, C) tensor. The table is saved in checkpoints as `pe`."""

    def __init__(self, dim: int, max_len: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_len, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]]


class TemporalSelfAttention(Attention):
    """Multi-head self-attention over frames; the position encoding enters q, k and v but not the residual."""

    def __init__(self, dim: int, heads: int, max_len: int | None):
        super().__init__(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False, out_bias=True)
        self.pos_encoder = PositionEncoding(dim, max_len) if max_len else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, frames, C)
        if self.pos_encoder is not None:
            x = self.pos_encoder(x)
        return super().forward(x)


class TemporalTransformerBlock(nn.Module):
    """Pre-norm temporal self-attentions, each with its residual, then a GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, num_attention_blocks: int, max_len: int | None):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            TemporalSelfAttention(dim, heads, max_len) for _ in range(num_attention_blocks)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(num_attention_blocks))
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, frames, C)
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = attention(norm(x)) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    """GroupNorm per frame, projection in, temporal transformer blocks, projection out, plus the input."""

    def __init__(self, channels: int, config: MotionModuleConfig):
        super().__init__()
        heads = config.num_attention_heads
        inner = heads * (channels // heads // config.temporal_attention_dim_div)
        max_len = config.temporal_position_encoding_max_len if config.temporal_position_encoding else None
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(inner, heads, config.num_attention_blocks, max_len)
            for _ in range(config.num_transformer_block)
        )
        self.proj_out = nn.Linear(inner, channels)
        if config.zero_initialize:
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: ((B F), C, H, W), frames folded into the batch -> same shape."""
        height, width = x.shape[-2:]
        # One token sequence per (clip, spatial position), running over the frames.
        h = rearrange(self.norm(x), "(b f) c h w -> (b h w) f c", f=num_frames)
        h = self.proj_in(h)
        for block in self.transformer_blocks:
            h = block(h)
        h = self.proj_out(h)
        return rearrange(h, "(b h w) f c -> (b f) c h w", h=height, w=width) + x


class MotionModule(nn.Module):
    """The checkpoint's wrapper level (`motion_modules.N.temporal_transformer`)."""

    def __init__(self, channels: int, config: MotionModuleConfig):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, config)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        return self.temporal_transformer(x, num_frames)
