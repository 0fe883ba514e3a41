"""Whisper's audio encoder (openai-whisper checkpoint layout), as LatentSync uses it: the input of the first block
and the output of every block, without the final LayerNorm (SPEC 3). No I/O here but reading its checkpoint."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Mapping

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..checkpoint import build_with_weights, extract_state_dict, read_checkpoint
from ..errors import CheckpointError

SUPPORTED_N_MELS = 80  # the log-mel bands of latentsync.audio.mel (WHISPER_N_MELS)


@dataclass(frozen=True)
class WhisperDims:
    """Encoder sizes, as stored under `dims` in an openai-whisper checkpoint (decoder sizes are ignored)."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int

    @classmethod
    def from_checkpoint(cls, dims: Mapping) -> WhisperDims:
        try:
            return cls(**{f.name: int(dims[f.name]) for f in fields(cls)})
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"Whisper checkpoint has incomplete `dims` ({exc})", "pass an openai-whisper file such as tiny.pt"
            ) from exc


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the model's dtype (as Whisper does, for fp16 stability)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class SelfAttention(nn.Module):
    """Whisper's multi-head self-attention (its key projection has no bias)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(p(x), "b t (h d) -> b h t d", h=self.heads) for p in (self.query, self.key, self.value))
        # Whisper scales q and k by d**-0.25 each, i.e. the product by 1/sqrt(d): SDPA's default.
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.out(rearrange(attended, "b h t d -> b t (h d)"))


class EncoderBlock(nn.Module):
    """Pre-LayerNorm transformer block: self-attention, then an MLP with exact GELU."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.attn_ln = LayerNorm32(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.mlp_ln = LayerNorm32(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder; parameter names equal the checkpoint's `encoder.*` keys without the prefix."""

    def __init__(self, dims: WhisperDims):
        super().__init__()
        self.dims = dims
        width = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(width, width, kernel_size=3, stride=2, padding=1)
        # The stored table is used as is (float16 in the published files), never recomputed.
        self.register_buffer("positional_embedding", torch.zeros(dims.n_audio_ctx, width))
        self.blocks = nn.ModuleList(EncoderBlock(width, dims.n_audio_head) for _ in range(dims.n_audio_layer))
        # Whisper's final LayerNorm: part of the checkpoint, but the LatentSync features are taken before it.
        self.ln_post = LayerNorm32(width)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, 3000) log-mel -> (B, 1500, n_layer + 1, width): block-0 input, then each block's output."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positional_embedding.to(x.dtype)
        hidden = [x]
        for block in self.blocks:
            x = block(x)
            hidden.append(x)
        return torch.stack(hidden, dim=2)


def _encoder_state(content: Mapping) -> dict[str, torch.Tensor]:
    """The encoder tensors of an openai-whisper checkpoint, without their `encoder.` prefix."""
    state = extract_state_dict(content)
    encoder = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    if not encoder:
        raise CheckpointError("Whisper checkpoint holds no `encoder.*` tensors", "pass an openai-whisper file such as tiny.pt")
    return encoder


def load_whisper_encoder(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> WhisperEncoder:
    """The encoder of an openai-whisper checkpoint (`{"dims": ..., "model_state_dict": ...}`), in eval mode;
    its sizes are in `.dims`."""
    content = read_checkpoint(path)
    if not isinstance(content.get("dims"), Mapping):
        raise CheckpointError(f"{path} is not an openai-whisper checkpoint (no `dims`)", "pass a file such as whisper/tiny.pt")
    dims = WhisperDims.from_checkpoint(content["dims"])
    if dims.n_mels != SUPPORTED_N_MELS:
        raise CheckpointError(
            f"Whisper checkpoint expects {dims.n_mels} mel bands; only {SUPPORTED_N_MELS} are supported",
            "use the Whisper tiny checkpoint published with LatentSync",
        )
    encoder = build_with_weights(lambda: WhisperEncoder(dims), _encoder_state(content), "Whisper encoder", dtype)
    return encoder.to(device=device, dtype=dtype).eval()
