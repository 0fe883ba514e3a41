"""The U-Net's audio features: Whisper encoder states (latentsync.models.whisper) per 30 s window, and per video frame.

Features (SPEC 3): per encoder frame (50 per second) the stack of the first block's input and every block's
output, (T, n_layer + 1, width); no final LayerNorm. Whisper encodes 30 s (3,000 mel frames) at a time; two ways to
cover a longer clip are offered:

- "reference": the published segmentation, bit-compatible with LatentSync. The log-mel is cut every 30 s, each
  piece is zero-padded to 30 s and encoded alone, and the frames of the padding are dropped. The features jump at
  every 30 s boundary (a frame just after it has no past context and restarts the positional embedding at 0).
- "seamless" (default): the reference features, except in a band of +-BAND_SECONDS around each 30 s boundary,
  where they come from an extra 30 s window centred on the boundary (so every frame there has context on both
  sides), cross-faded linearly with the reference features over RAMP_SECONDS at each side of the band. Far from
  the boundaries both modes give the same numbers; clips up to 30 s are identical in both.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..errors import InputError
from ..models.whisper import load_whisper_encoder
from ..timebase import FPS
from .io import load_audio
from .mel import whisper_log_mel

SEGMENT_MEL_FRAMES = 3000  # Whisper's 30 s input window
FEATURES_PER_SECOND = 50
WINDOW_OFFSETS = range(-4, 6)  # encoder frames c-4 .. c+5 around a video frame's centre c
BAND_SECONDS = 2.0  # half-width of the band around a 30 s boundary taken from the boundary window alone
RAMP_SECONDS = 2.0  # length of each linear cross-fade between the boundary window and the reference segments

Segmenting = Literal["seamless", "reference"]


class WhisperFeatures:
    """Turns speech into the U-Net's audio features with a Whisper encoder checkpoint (openai-whisper format)."""

    def __init__(
        self,
        checkpoint_path: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 8,
    ):
        self.encoder = load_whisper_encoder(checkpoint_path, device, dtype)
        self.dims = self.encoder.dims
        self.device, self.dtype = torch.device(device), dtype
        self.batch_size = batch_size  # 30 s windows encoded per forward pass

    @property
    def width(self) -> int:
        return self.dims.n_audio_state

    def features(
        self, wav_or_path: np.ndarray | torch.Tensor | str | os.PathLike, segmenting: Segmenting = "seamless"
    ) -> torch.Tensor:
        """Audio features of a whole clip: (T, n_layer + 1, width) float32 on the CPU, T = 50 per second.

        `wav_or_path`: 16 kHz mono samples, or any media file (read with load_audio).
        `segmenting`: "seamless" (default) or "reference" (the published 30 s segmentation, see the module notes).
        """
        if segmenting not in ("seamless", "reference"):
            raise InputError(f"unknown segmenting {segmenting!r}", 'use "seamless" or "reference"')
        wav = load_audio(wav_or_path) if isinstance(wav_or_path, (str, os.PathLike)) else wav_or_path
        log_mel = whisper_log_mel(wav)  # one global max floor for the whole clip, in both modes
        mel_frames = log_mel.shape[1]
        segment_starts = list(range(0, mel_frames, SEGMENT_MEL_FRAMES))
        boundaries = segment_starts[1:] if segmenting == "seamless" else []
        window_starts = segment_starts + [_boundary_window_start(b, mel_frames) for b in boundaries]
        encoded = self._encode_windows(log_mel, window_starts)

        features = torch.cat(
            [encoded[i][: min(SEGMENT_MEL_FRAMES, mel_frames - start) // 2] for i, start in enumerate(segment_starts)]
        )
        for boundary, start, window in zip(boundaries, window_starts[len(segment_starts) :], encoded[len(segment_starts) :]):
            _blend_boundary(features, window, boundary // 2, start // 2)
        return features

    def _encode_windows(self, log_mel: torch.Tensor, starts: list[int]) -> list[torch.Tensor]:
        """Encoder outputs (1500, n_layer + 1, width) of the 30 s windows at the given mel frames, zero-padded."""
        windows = [log_mel[:, s : s + SEGMENT_MEL_FRAMES] for s in starts]
        padded = torch.stack([F.pad(w, (0, SEGMENT_MEL_FRAMES - w.shape[1])) for w in windows])
        outputs = []
        with torch.inference_mode():
            for batch in padded.split(self.batch_size):
                out = self.encoder(batch.to(device=self.device, dtype=self.dtype))
                outputs.extend(out.float().cpu())
        return outputs

    def windows(self, features: torch.Tensor, num_frames: int, start: int = 0) -> torch.Tensor:
        """Per-video-frame audio tokens (SPEC 3): (num_frames, 10 * (n_layer + 1), width) for frames
        start .. start+num_frames-1 (a chunk of a long video needs only its own windows).

        Frame i (25 fps) takes encoder frames 2i-4 .. 2i+5, clamped to the clip, flattened time-major. The published
        loop yields 2 windows more than the video has frames; exactly `num_frames` are returned here.
        """
        return audio_windows(features, num_frames, start)


def audio_windows(features: torch.Tensor, num_frames: int, start: int = 0) -> torch.Tensor:
    """See WhisperFeatures.windows; usable without loading an encoder."""
    if features.ndim != 3 or features.shape[0] == 0:
        raise InputError(f"expected features of shape (T, layers, width), got {tuple(features.shape)}")
    if num_frames < 1:
        raise InputError(f"num_frames must be positive, got {num_frames}")
    centres = torch.arange(start, start + num_frames) * FEATURES_PER_SECOND // int(FPS)
    index = (centres[:, None] + torch.tensor(WINDOW_OFFSETS)).clamp(0, features.shape[0] - 1)
    return rearrange(features[index], "f t l c -> f (t l) c")


def _boundary_window_start(boundary: int, mel_frames: int) -> int:
    """First mel frame (even, so encoder frames stay aligned) of a 30 s window centred on a segment boundary,
    moved back where the clip ends less than 15 s after the boundary, so it holds as much real audio as possible."""
    start = min(boundary - SEGMENT_MEL_FRAMES // 2, mel_frames - SEGMENT_MEL_FRAMES)
    return max(0, start - start % 2)


def _blend_boundary(features: torch.Tensor, window: torch.Tensor, boundary: int, window_start: int) -> None:
    """Replace, in place, the features around `boundary` (encoder frames) by the boundary window's, with linear ramps."""
    band, ramp = int(BAND_SECONDS * FEATURES_PER_SECOND), int(RAMP_SECONDS * FEATURES_PER_SECOND)
    lo = max(0, boundary - band - ramp)
    hi = min(features.shape[0], boundary + band + ramp + 1, window_start + window.shape[0])
    frames = torch.arange(lo, hi)
    distance_into_ramp = (frames - boundary).abs() - band  # <= 0 inside the band
    weight = (1 - distance_into_ramp.clamp(min=0) / (ramp + 1)).clamp(0, 1)[:, None, None]  # boundary window's share
    features[lo:hi] = torch.lerp(features[lo:hi], window[lo - window_start : hi - window_start], weight)
