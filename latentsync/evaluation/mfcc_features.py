"""MFCC features as the published Sync-C / Sync-D evaluation computes them (python_speech_features 0.6 defaults).

16 kHz samples, unscaled int16 values: pre-emphasis 0.97 over the whole signal; 400-sample frames every 160
samples (the last zero-padded), no window function; 512-point power spectrum / 512; 26 triangular mel filters
from 0 to 8 kHz on FFT bins floor(513 f / 16000); natural log (exact zeros become float64 eps first); orthonormal
DCT-II, 13 kept, sine lifter 22; coefficient 0 replaced by the log of each frame's total power. 100 frames a second.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import InputError

SAMPLE_RATE = 16000
FRAME_LEN = 400  # 25 ms
FRAME_STEP = 160  # 10 ms
NFFT = 512
NUM_FILTERS = 26
NUM_CEPS = 13
LIFTER = 22
PREEMPHASIS = 0.97
_EPS = np.finfo(np.float64).eps


def _hz_to_mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel_to_hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


@lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    """(26, 257) triangular filters, rising from bin[j] to bin[j+1] and falling to bin[j+2]."""
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), NUM_FILTERS + 2)
    bins = np.floor((NFFT + 1) * _mel_to_hz(mels) / SAMPLE_RATE)
    filters = np.zeros((NUM_FILTERS, NFFT // 2 + 1))
    for j in range(NUM_FILTERS):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(lo), int(mid)):
            filters[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            filters[j, i] = (hi - i) / (hi - mid)
    return filters


@lru_cache(maxsize=1)
def _dct_lifter() -> np.ndarray:
    """(26, 13) orthonormal DCT-II basis (first 13 outputs) with the sine lifter folded in."""
    n = np.arange(NUM_FILTERS)
    k = np.arange(NUM_CEPS)
    basis = np.cos(np.pi * (2 * n[:, None] + 1) * k[None, :] / (2 * NUM_FILTERS)) * math.sqrt(2 / NUM_FILTERS)
    basis[:, 0] /= math.sqrt(2)
    return basis * (1 + LIFTER / 2 * np.sin(np.pi * k / LIFTER))


def num_mfcc_frames(num_samples: int) -> int:
    """Frames `mfcc` returns for `num_samples` samples: 1 + ceil((n - 400) / 160), at least 1."""
    if num_samples <= FRAME_LEN:
        return 1
    return 1 + math.ceil((num_samples - FRAME_LEN) / FRAME_STEP)


def mfcc(samples_int16: np.ndarray) -> np.ndarray:
    """(T, 13) float64 MFCC of 16 kHz mono samples given as int16 values (not scaled to [-1, 1])."""
    samples = np.asarray(samples_int16)
    if samples.ndim != 1 or samples.size == 0:
        raise InputError(f"MFCC input must be a non-empty 1-D array of 16 kHz samples, got shape {samples.shape}",
                         "pass mono int16 samples, e.g. np.round(load_audio(path) * 32768).astype(np.int16)")
    x = samples.astype(np.float64)
    emphasised = np.concatenate([x[:1], x[1:] - PREEMPHASIS * x[:-1]])
    count = num_mfcc_frames(len(x))
    padded = np.zeros((count - 1) * FRAME_STEP + FRAME_LEN)
    padded[: len(emphasised)] = emphasised
    frames = np.lib.stride_tricks.sliding_window_view(padded, FRAME_LEN)[::FRAME_STEP][:count]
    power = np.abs(np.fft.rfft(frames, NFFT)) ** 2 / NFFT
    energy = power.sum(axis=1)
    energy[energy == 0] = _EPS
    banded = power @ _mel_filters().T
    banded[banded == 0] = _EPS
    features = np.log(banded) @ _dct_lifter()
    features[:, 0] = np.log(energy)
    return features
