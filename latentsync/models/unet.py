"""The audio-conditioned 3-D U-Net of LatentSync 1.5 / 1.6, loadable from the published `latentsync_unet.pt`.

Stable Diffusion 1.5's U-Net applied frame by frame (frames folded into the batch for every 2-D layer), whose
spatial transformers cross-attend to each frame's 50 Whisper audio tokens, with AnimateDiff temporal modules
after every layer of the down and up blocks. Quirk kept for checkpoint parity: the GroupNorms of the resnets and
the output norm take their statistics over all frames of a clip (the published model applies them to 5-D
tensors), while the transformers' norms work per frame. Input: 13 channels (noisy latents 4, mask 1,
masked-image latents 4, reference latents 4); output: the predicted noise (4 channels).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from einops import rearrange
from torch import nn

from ..checkpoint import build_with_weights, load_state_dict
from ..config import model_section
from ..errors import InputError
from .motion_module import MotionModuleConfig
from .unet_blocks import BlockSettings, ClipGroupNorm, DownBlock, MidBlock, UpBlock, _Block

_CROSS_ATTN_DOWN, _PLAIN_DOWN = "CrossAttnDownBlock3D", "DownBlock3D"
_CROSS_ATTN_UP, _PLAIN_UP = "CrossAttnUpBlock3D", "UpBlock3D"

# Published config fields that only have one supported value (anything else would change the maths).
_FIXED_FIELDS = {
    "act_fn": ("silu", "swish"),
    "resnet_time_scale_shift": ("default",),
    "mid_block_type": ("UNetMidBlock3DCrossAttn",),
    "motion_module_type": ("Vanilla",),
    "mid_block_scale_factor": (1,),
}


def _config_error(message: str) -> InputError:
    return InputError(f"unsupported U-Net config: {message}", "use a published LatentSync U-Net config (configs/unet/)")


@dataclass(frozen=True)
class UNetConfig:
    """The architecture fields of a published U-Net YAML (`model:` section); defaults are LatentSync 1.5/1.6."""

    in_channels: int = 13
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = (_CROSS_ATTN_DOWN, _CROSS_ATTN_DOWN, _CROSS_ATTN_DOWN, _PLAIN_DOWN)
    up_block_types: tuple[str, ...] = (_PLAIN_UP, _CROSS_ATTN_UP, _CROSS_ATTN_UP, _CROSS_ATTN_UP)
    layers_per_block: int = 2
    attention_head_dim: int = 8  # the published name; it is the number of heads (as in Stable Diffusion 1.5)
    cross_attention_dim: int = 384
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    center_input_sample: bool = False
    add_audio_layer: bool = True
    use_motion_module: bool = True
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_module_mid_block: bool = False
    motion_module_decoder_only: bool = False
    motion_module_kwargs: MotionModuleConfig = MotionModuleConfig()

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> UNetConfig:
        """Build from the published `model:` fields; fields without influence on the network are ignored."""
        for name, allowed in _FIXED_FIELDS.items():
            if name in fields and fields[name] not in allowed:
                raise _config_error(f"{name}={fields[name]!r} (supported: {', '.join(map(str, allowed))})")
        values = _known_fields(cls, fields)
        if "motion_module_kwargs" in values:
            values["motion_module_kwargs"] = _motion_config(values["motion_module_kwargs"])
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise an InputError when the fields describe a network this implementation does not build."""
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise _config_error("down_block_types, up_block_types and block_out_channels differ in length")
        if not set(self.down_block_types) <= {_CROSS_ATTN_DOWN, _PLAIN_DOWN}:
            raise _config_error(f"down_block_types {list(self.down_block_types)}")
        if not set(self.up_block_types) <= {_CROSS_ATTN_UP, _PLAIN_UP}:
            raise _config_error(f"up_block_types {list(self.up_block_types)}")
        for c in self.block_out_channels:
            if c % self.norm_num_groups or c % self.attention_head_dim:
                raise _config_error(f"{c} channels do not split into {self.norm_num_groups} groups / heads")


def _known_fields(cls: type, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `fields` that name fields of the dataclass `cls`, checked against the defaults' types."""
    values = {}
    for field in dataclasses.fields(cls):
        if field.name not in fields:
            continue
        value, default = fields[field.name], field.default
        if isinstance(default, tuple):
            value = tuple(value)
        elif isinstance(default, float):
            try:
                value = float(value)  # YAML 1.1 reads `1e-5` as text
            except (TypeError, ValueError):
                raise _config_error(f"{field.name}={value!r} is not a number") from None
        elif isinstance(default, (bool, int)) and type(value) is not type(default):
            raise _config_error(f"{field.name}={value!r} should be of type {type(default).__name__}")
        values[field.name] = value
    return values


def _motion_config(kwargs: Mapping[str, Any] | MotionModuleConfig) -> MotionModuleConfig:
    """The published `motion_module_kwargs` as a MotionModuleConfig."""
    if isinstance(kwargs, MotionModuleConfig):
        return kwargs
    kinds = list(kwargs.get("attention_block_types", ("Temporal_Self", "Temporal_Self")))
    if not kinds or any(k != "Temporal_Self" for k in kinds):
        raise _config_error(f"motion module attention_block_types {kinds} (supported: Temporal_Self only)")
    values = _known_fields(MotionModuleConfig, kwargs)
    values["num_attention_blocks"] = len(kinds)
    return MotionModuleConfig(**values)


class LatentSyncUNet(nn.Module):
    """The LatentSync U-Net: `(sample, timestep, audio_embeds) -> predicted noise`, parameter names as published."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        channels = config.block_out_channels
        temb_channels = channels[0] * 4
        settings = BlockSettings(
            temb_channels=temb_channels,
            norm_groups=config.norm_num_groups,
            norm_eps=config.norm_eps,
            attention_heads=config.attention_head_dim,
            cross_attention_dim=config.cross_attention_dim if config.add_audio_layer else None,
        )

        self.conv_in = nn.Conv2d(config.in_channels, channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(channels[0], config.flip_sin_to_cos, config.freq_shift)
        self.time_embedding = TimestepEmbedding(channels[0], temb_channels)

        last = len(channels) - 1
        self.down_blocks = nn.ModuleList()
        for i, kind in enumerate(config.down_block_types):
            self.down_blocks.append(
                DownBlock(
                    channels[max(i - 1, 0)],
                    channels[i],
                    config.layers_per_block,
                    settings,
                    cross_attention=kind == _CROSS_ATTN_DOWN,
                    motion=self._motion(2**i, encoder=True),
                    add_downsample=i < last,
                    downsample_padding=config.downsample_padding,
                )
            )

        self.mid_block = MidBlock(
            channels[-1],
            settings,
            motion=config.motion_module_kwargs if config.use_motion_module and config.motion_module_mid_block else None,
        )

        reversed_channels = channels[::-1]
        self.up_blocks = nn.ModuleList()
        for i, kind in enumerate(config.up_block_types):
            self.up_blocks.append(
                UpBlock(
                    in_channels=reversed_channels[min(i + 1, last)],
                    prev_channels=reversed_channels[max(i - 1, 0)],
                    out_channels=reversed_channels[i],
                    num_layers=config.layers_per_block + 1,
                    settings=settings,
                    cross_attention=kind == _CROSS_ATTN_UP,
                    motion=self._motion(2 ** (last - i), encoder=False),
                    add_upsample=i < last,
                )
            )

        # Like the resnets' norms, the final norm takes its statistics over the whole clip (parity vectors).
        self.conv_norm_out = ClipGroupNorm(config.norm_num_groups, channels[0], eps=config.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], config.out_channels, kernel_size=3, padding=1)

    def _motion(self, resolution: int, *, encoder: bool) -> MotionModuleConfig | None:
        """The motion-module settings for a block at this downsampling factor, or None where it has none."""
        c = self.config
        wanted = c.use_motion_module and resolution in c.motion_module_resolutions
        return c.motion_module_kwargs if wanted and not (encoder and c.motion_module_decoder_only) else None

    @property
    def max_frames(self) -> int | None:
        """The most frames one call may hold (the temporal position table's length), None when unlimited."""
        m = self.config.motion_module_kwargs
        has_table = self.config.use_motion_module and m.temporal_position_encoding
        return m.temporal_position_encoding_max_len if has_table else None

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each layer's activations in the backward pass (saves memory when training)."""
        self._set_gradient_checkpointing(True)

    def disable_gradient_checkpointing(self) -> None:
        self._set_gradient_checkpointing(False)

    def _set_gradient_checkpointing(self, enabled: bool) -> None:
        for module in self.modules():
            if isinstance(module, _Block):
                module.gradient_checkpointing = enabled

    def _check_inputs(self, sample: torch.Tensor, audio_embeds: torch.Tensor | None) -> None:
        c = self.config
        if sample.ndim != 5 or sample.shape[1] != c.in_channels:
            raise InputError(
                f"U-Net sample must be (batch, {c.in_channels}, frames, height, width), got {tuple(sample.shape)}",
                "stack noisy latents, mask, masked-image latents and reference latents on dim 1",
            )
        frames = sample.shape[2]
        if self.max_frames is not None and frames > self.max_frames:
            raise InputError(
                f"{frames} frames in one U-Net call; the temporal modules support at most {self.max_frames}",
                "process the video in chunks of 16 frames",
            )
        if not c.add_audio_layer:
            return
        expected = (sample.shape[0], frames)
        if audio_embeds is None or audio_embeds.ndim != 4 or tuple(audio_embeds.shape[:2]) != expected:
            got = None if audio_embeds is None else tuple(audio_embeds.shape)
            raise InputError(
                f"audio_embeds must be (batch, frames, tokens, {c.cross_attention_dim}) with batch, frames = "
                f"{expected}, got {got}",
                "pass one window of Whisper features per video frame (all zeros for the unconditional branch)",
            )
        if audio_embeds.shape[-1] != c.cross_attention_dim:
            raise InputError(
                f"audio tokens have width {audio_embeds.shape[-1]}, the U-Net expects {c.cross_attention_dim}",
                "use Whisper tiny features (5 layers x 384 per encoder frame)",
            )

    @staticmethod
    def _up(block: UpBlock, x: torch.Tensor, skips: list[torch.Tensor], temb, audio, frames: int):
        """One up block on `x`, consuming its skip connections from the end of `skips`; returns x and the rest."""
        n = len(block.resnets)
        block_skips, skips = skips[-n:], skips[:-n]
        upsample_size = skips[-1].shape[-2:] if skips else None
        return block(x, block_skips, temb, audio, frames, upsample_size), skips

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, audio_embeds: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict the noise.

        sample: (B, 13, F, H, W); timestep: int, 0-d, or (1,) / (B,) tensor; audio_embeds: (B, F, tokens, 384)
        (ignored, and may be None, when the config has no audio layer). Returns (B, 4, F, H, W).
        """
        return self.forward_split(sample, timestep, audio_embeds)[0]

    @property
    def shallow_levels(self) -> int:
        """How many resolution levels a shallow branch (`forward_split`) may keep: all but the deepest."""
        return len(self.down_blocks) - 1

    def forward_split(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        audio_embeds: torch.Tensor | None = None,
        *,
        levels: int = 1,
        deep: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass seen as a shallow branch (the outer `levels` resolution levels: their down layers and
        up blocks) around a deep one (everything below). Returns the noise and the deep branch's output, the
        features that enter the shallow up blocks.

        Without `deep` this is the whole forward pass (`forward` is this). With `deep` (the second result of an
        earlier call on a same-shaped sample) the deep branch is not run: those features are used instead and
        only the shallow branch is computed, at this call's sample and timestep (DeepCache's step reuse).
        """
        if not 1 <= levels <= self.shallow_levels:
            raise InputError(f"levels must be between 1 and {self.shallow_levels}, got {levels}")
        self._check_inputs(sample, audio_embeds)
        batch, frames = sample.shape[0], sample.shape[2]
        timestep = torch.as_tensor(timestep, device=sample.device).reshape(-1)
        if timestep.numel() not in (1, batch):
            raise InputError(f"{timestep.numel()} timesteps for a batch of {batch}", "pass one, or one per clip")
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0

        temb = self.time_proj(timestep.expand(batch)).to(sample.dtype)
        temb = self.time_embedding(temb)  # (B, C): one row per clip
        audio = None
        if self.config.add_audio_layer:
            audio = rearrange(audio_embeds.to(sample.dtype), "b f n c -> (b f) n c")

        reuse = deep is not None
        if reuse and deep.shape[0] != batch * frames:
            raise InputError(
                f"reused deep features hold {deep.shape[0]} frames, this call {batch} x {frames}",
                "reuse features only between steps of the same chunk",
            )
        x = self.conv_in(rearrange(sample, "b c f h w -> (b f) c h w"))
        skips = [x]
        for i, block in enumerate(self.down_blocks[:levels] if reuse else self.down_blocks):
            # Reusing, the last shallow level's downsampled output (it feeds only the deep branch) is not computed.
            x, block_skips = block(x, temb, audio, frames, downsample=not reuse or i < levels - 1)
            skips += block_skips

        first_shallow = len(self.up_blocks) - levels
        if not reuse:
            x = self.mid_block(x, temb, audio, frames)
            for block in self.up_blocks[:first_shallow]:
                x, skips = self._up(block, x, skips, temb, audio, frames)
            deep = x
        x = deep
        for block in self.up_blocks[first_shallow:]:
            x, skips = self._up(block, x, skips, temb, audio, frames)

        x = self.conv_out(self.conv_act(self.conv_norm_out(x, frames)))
        return rearrange(x, "(b f) c h w -> b c f h w", b=batch).contiguous(), deep


def load_unet(
    config: str | os.PathLike | Mapping[str, Any] | UNetConfig,
    checkpoint: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LatentSyncUNet:
    """Build the U-Net from a published YAML (its `model:` section), a dict of those fields, or a UNetConfig.

    Without a checkpoint the weights are randomly initialised (temporal `proj_out` zeroed, as published);
    with one (`.pt` holding `{"state_dict": ...}` or a bare state dict, or `.safetensors`) every tensor must match
    by name and shape (CheckpointError otherwise). The model is returned in eval mode on `device` in `dtype`.
    """
    if not isinstance(config, UNetConfig):
        config = UNetConfig.from_dict(model_section(config))
    state = None if checkpoint is None else load_state_dict(checkpoint)
    model = build_with_weights(lambda: LatentSyncUNet(config), state, "U-Net", dtype)
    return model.to(device=device, dtype=dtype).eval()
