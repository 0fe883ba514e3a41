"""VideoMAE-v2 video ViT (fine-tuned layout), the feature extractor of the TREPA loss.

Loads `vit_g_hybrid_pt_1200e_ssv2_ft.pth` (ViT-giant, patch 14, tubelet 2, 16 frames at 224 px, fine-tuned on
Something-Something v2, 174 classes). Key layout of that file (tensors at the top level or under "model"/"module"):

    patch_embed.proj.weight (D, 3, 2, 14, 14), patch_embed.proj.bias (D,)
    blocks.N.norm1.{weight,bias} (D,)           blocks.N.norm2.{weight,bias} (D,)
    blocks.N.attn.qkv.weight (3D, D)  (no bias tensor: the bias is q_bias, zeros, v_bias)
    blocks.N.attn.q_bias (D,), blocks.N.attn.v_bias (D,)
    blocks.N.attn.proj.{weight (D, D), bias (D,)}
    blocks.N.mlp.fc1.{weight (H, D), bias (H,)}  blocks.N.mlp.fc2.{weight (D, H), bias (D,)}
    fc_norm.{weight,bias} (D,), head.{weight (174, D), bias (174,)}

The position table is not stored: it is the fixed sin/cos table over the flattened (time, row, column) patch
index. Blocks are pre-LayerNorm (eps 1e-6) with exact-GELU MLPs and no layer scale. Features (what TREPA
compares, as the published TREPA does) = `fc_norm` of the mean of all output tokens, before the classifier head.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..checkpoint import WRAPPER_KEYS, build_with_weights, extract_state_dict, read_checkpoint
from ..errors import InputError


@dataclass(frozen=True)
class VideoMAEConfig:
    """Sizes of the ViT; defaults are the published ViT-g/14 SSv2 fine-tune used by TREPA."""

    image_size: int = 224
    patch_size: int = 14
    tubelet_size: int = 2
    num_frames: int = 16
    embed_dim: int = 1408
    depth: int = 40
    num_heads: int = 16
    mlp_ratio: float = 48 / 11
    num_classes: int = 174
    norm_eps: float = 1e-6

    @property
    def grid(self) -> tuple[int, int, int]:
        """Patches along (time, height, width)."""
        side = self.image_size // self.patch_size
        return self.num_frames // self.tubelet_size, side, side

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


def sinusoid_table(positions: int, dim: int) -> torch.Tensor:
    """(positions, dim) table: channel j uses frequency 10000^(-2*(j//2)/dim), sin at even j, cos at odd j."""
    pos = torch.arange(positions, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-2.0 * (torch.arange(dim) // 2).double() / dim)
    angles = pos * freq
    table = torch.where(torch.arange(dim) % 2 == 0, angles.sin(), angles.cos())
    return table.float()


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv matrix; q and v have biases, k has none."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d)) v
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block."""

    def __init__(self, config: VideoMAEConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        self.attn = Attention(config.embed_dim, config.num_heads)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        self.mlp = Mlp(config.embed_dim, config.mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Cuts the clip into tubelet x patch x patch cubes and projects each to a token."""

    def __init__(self, config: VideoMAEConfig):
        super().__init__()
        size = (config.tubelet_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(3, config.embed_dim, kernel_size=size, stride=size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rearrange(self.proj(x), "b d t h w -> b (t h w) d")


class VideoMAE(nn.Module):
    """`model(clips)`: clips (B, 3, F, S, S) with values in [0, 1] -> features (B, embed_dim) (see module notes)."""

    def __init__(self, config: VideoMAEConfig = VideoMAEConfig()):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.fc_norm = nn.LayerNorm(config.embed_dim, eps=config.norm_eps)
        self.head = nn.Linear(config.embed_dim, config.num_classes)  # the SSv2 classifier; loaded, not used by TREPA
        self.gradient_checkpointing = False

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each block in the backward pass (the loss back-propagates through this frozen model)."""
        self.gradient_checkpointing = True

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        c = self.config
        expected = (3, c.num_frames, c.image_size, c.image_size)
        if clips.ndim != 5 or tuple(clips.shape[1:]) != expected:
            raise InputError(
                f"VideoMAE input must be (batch, {', '.join(map(str, expected))}), got {tuple(clips.shape)}",
                f"resize frames to {c.image_size} px and cut {c.num_frames}-frame clips",
            )
        x = self.patch_embed(clips)
        x = x + sinusoid_table(math.prod(c.grid), c.embed_dim).to(x.device, x.dtype)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.fc_norm(x.mean(dim=1))


def load_videomae(
    checkpoint: str | os.PathLike | None = None,
    config: VideoMAEConfig = VideoMAEConfig(),
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> VideoMAE:
    """The VideoMAE-v2 ViT, frozen and in eval mode; random weights without a checkpoint (tests)."""
    state = None
    if checkpoint is not None:  # the VideoMAE-v2 releases keep the weights at the top level or under model / module
        state = extract_state_dict(read_checkpoint(checkpoint), ("model", "module", *WRAPPER_KEYS))
    model = build_with_weights(lambda: VideoMAE(config), state, "VideoMAE-v2", dtype)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
