"""Down, mid and up blocks of the LatentSync U-Net.

Every block works on frames folded into the batch: hidden states are ((B F), C, H, W), so the convolutions,
spatial transformers and resamplers see each frame on its own. Two kinds of layer look across the frames of a
clip and get the frame count to unfold it: the motion modules, and the resnets' GroupNorms, whose statistics
span the whole clip (the published model normalises 5-D tensors there; the parity vectors confirm it).
Audio tokens arrive as ((B F), tokens, C): each frame's spatial transformers cross-attend to its own tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import Downsample2D, Upsample2D
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from .motion_module import MotionModule, MotionModuleConfig


@dataclass(frozen=True)
class BlockSettings:
    """What every block of one U-Net shares."""

    temb_channels: int
    norm_groups: int
    norm_eps: float
    attention_heads: int
    cross_attention_dim: int | None  # None: no audio cross-attention (`attn2`)


class ClipGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics span all frames of a clip (per clip and group, not per frame)."""

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:  # ((B F), C, H, W)
        clip = rearrange(x, "(b f) c h w -> b c f (h w)", f=frames)
        out = super().forward(clip)
        return rearrange(out, "b c f (h w) -> (b f) c h w", h=x.shape[2]).contiguous()


class ResnetBlock(nn.Module):
    """Stable Diffusion's resnet block (GroupNorm, SiLU, 3x3 conv, + time embedding, twice) with clip-wide norms."""

    def __init__(self, in_channels: int, out_channels: int, settings: BlockSettings):
        super().__init__()
        s = settings
        self.norm1 = ClipGroupNorm(s.norm_groups, in_channels, eps=s.norm_eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(s.temb_channels, out_channels)
        self.norm2 = ClipGroupNorm(s.norm_groups, out_channels, eps=s.norm_eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_shortcut = None  # identity unless the channel count changes
        if in_channels != out_channels:
            self.conv_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, frames: int) -> torch.Tensor:
        """x: ((B F), C, H, W); temb: (B, temb_channels), one row per clip."""
        h = self.conv1(F.silu(self.norm1(x, frames)))
        time = self.time_emb_proj(F.silu(temb)).repeat_interleave(frames, dim=0)
        h = h + time[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h, frames)))
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return shortcut + h


class SpatialTransformer(nn.Module):
    """Stable Diffusion's spatial transformer: GroupNorm, 1x1 conv in, transformer block(s), 1x1 conv out, residual."""

    def __init__(self, channels: int, settings: BlockSettings):
        super().__init__()
        heads = settings.attention_heads
        self.norm = nn.GroupNorm(settings.norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [
                BasicTransformerBlock(
                    channels,
                    heads,
                    channels // heads,
                    cross_attention_dim=settings.cross_attention_dim,
                    activation_fn="geglu",
                )
            ]
        )
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        """x: (N, C, H, W); audio: (N, tokens, C_audio) or None."""
        n, c, height, width = x.shape
        h = self.proj_in(self.norm(x))
        h = h.permute(0, 2, 3, 1).reshape(n, height * width, c)
        for block in self.transformer_blocks:
            h = block(h, encoder_hidden_states=audio)
        h = h.reshape(n, height, width, c).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(h) + x


class _Block(nn.Module):
    """Shared machinery: optional per-layer gradient checkpointing and the resnet/attention/motion step."""

    gradient_checkpointing: bool = False

    def _run(self, layer: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        # When enabled, the layer's activations are recomputed in the backward pass instead of being kept.
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def _layer_step(self, i: int, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor | None, frames: int):
        """Resnet i, then spatial transformer i and motion module i where the block has them."""
        x = self._run(self.resnets[i], x, temb, frames)
        if self.attentions is not None:
            x = self._run(self.attentions[i], x, audio)
        if self.motion_modules is not None:
            x = self._run(self.motion_modules[i], x, frames)
        return x


def _optional(present: bool, make: Callable[[], nn.Module], count: int = 1) -> nn.ModuleList | None:
    """`count` new modules from `make`, or None where the block has no such layers."""
    return nn.ModuleList(make() for _ in range(count)) if present else None


class DownBlock(_Block):
    """`CrossAttnDownBlock3D` (with spatial transformers) or `DownBlock3D` (without), then a 2x downsampler."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_layers: int,
        settings: BlockSettings,
        *,
        cross_attention: bool,
        motion: MotionModuleConfig | None,
        add_downsample: bool,
        downsample_padding: int = 1,
    ):
        super().__init__()
        ins = [in_channels] + [out_channels] * (num_layers - 1)
        self.resnets = nn.ModuleList(ResnetBlock(c, out_channels, settings) for c in ins)
        self.attentions = _optional(cross_attention, lambda: SpatialTransformer(out_channels, settings), num_layers)
        self.motion_modules = _optional(motion is not None, lambda: MotionModule(out_channels, motion), num_layers)
        self.downsamplers = _optional(
            add_downsample, lambda: Downsample2D(out_channels, use_conv=True, padding=downsample_padding, name="op")
        )

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor | None, frames: int, downsample: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns the output and the skip connections it produced (one per layer, plus the downsampled one).
        `downsample=False` stops before the downsampler (for a caller that needs only the layers' outputs)."""
        skips = []
        for i in range(len(self.resnets)):
            x = self._layer_step(i, x, temb, audio, frames)
            skips.append(x)
        if self.downsamplers is not None and downsample:
            x = self._run(self.downsamplers[0], x)
            skips.append(x)
        return x, skips


class MidBlock(_Block):
    """`UNetMidBlock3DCrossAttn`: resnet, then (spatial transformer, optional motion module, resnet)."""

    def __init__(self, channels: int, settings: BlockSettings, *, motion: MotionModuleConfig | None):
        super().__init__()
        self.resnets = nn.ModuleList(ResnetBlock(channels, channels, settings) for _ in range(2))
        self.attentions = nn.ModuleList([SpatialTransformer(channels, settings)])
        self.motion_modules = _optional(motion is not None, lambda: MotionModule(channels, motion))

    def forward(self, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor | None, frames: int) -> torch.Tensor:
        x = self._run(self.resnets[0], x, temb, frames)
        x = self._run(self.attentions[0], x, audio)
        if self.motion_modules is not None:
            x = self._run(self.motion_modules[0], x, frames)
        return self._run(self.resnets[1], x, temb, frames)


class UpBlock(_Block):
    """`CrossAttnUpBlock3D` or `UpBlock3D`: each layer first concatenates a skip connection; then a 2x upsampler."""

    def __init__(
        self,
        in_channels: int,
        prev_channels: int,
        out_channels: int,
        num_layers: int,
        settings: BlockSettings,
        *,
        cross_attention: bool,
        motion: MotionModuleConfig | None,
        add_upsample: bool,
    ):
        super().__init__()
        # Skips arrive deepest first; the last one consumed comes from the previous (shallower) down block.
        skip_channels = [out_channels] * (num_layers - 1) + [in_channels]
        ins = [prev_channels] + [out_channels] * (num_layers - 1)
        self.resnets = nn.ModuleList(ResnetBlock(c + s, out_channels, settings) for c, s in zip(ins, skip_channels))
        self.attentions = _optional(cross_attention, lambda: SpatialTransformer(out_channels, settings), num_layers)
        self.motion_modules = _optional(motion is not None, lambda: MotionModule(out_channels, motion), num_layers)
        self.upsamplers = _optional(add_upsample, lambda: Upsample2D(out_channels, use_conv=True))

    def forward(
        self,
        x: torch.Tensor,
        skips: list[torch.Tensor],
        temb: torch.Tensor,
        audio: torch.Tensor | None,
        frames: int,
        upsample_size: torch.Size | None,
    ) -> torch.Tensor:
        """`skips` in the order the down path produced them; they are consumed from the end."""
        for i in range(len(self.resnets)):
            x = torch.cat([x, skips[-1 - i]], dim=1)
            x = self._layer_step(i, x, temb, audio, frames)
        if self.upsamplers is not None:
            # An explicit size lets odd latent sizes (H or W not divisible by 8) meet their skip again.
            x = self._run(self.upsamplers[0], x, upsample_size)
        return x
