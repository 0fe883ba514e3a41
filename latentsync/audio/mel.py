"""The two spectrograms of the system: Whisper's log-mel (U-Net audio features) and the SyncNet mel.

Whisper (SPEC 3): 100 frames per second, fed to the Whisper encoder.
SyncNet (SPEC 4, the Wav2Lip recipe): 80 frames per second, cut into 52-column windows per 16 video frames.
"""

from __future__ import annotations

import math
from functools import lru_cache

import librosa
import numpy as np
import torch

from ..errors import InputError
from ..timebase import FPS, SAMPLE_RATE

# Whisper log-mel
WHISPER_N_FFT = 400
WHISPER_HOP = 160
WHISPER_N_MELS = 80

# SyncNet mel (Wav2Lip hyper-parameters, latentsync/configs/audio.yaml)
SYNCNET_N_FFT = 800
SYNCNET_HOP = 200
SYNCNET_N_MELS = 80
SYNCNET_FMIN, SYNCNET_FMAX = 55.0, 7600.0
SYNCNET_PREEMPHASIS = 0.97
SYNCNET_MIN_LEVEL_DB = -100.0
SYNCNET_REF_LEVEL_DB = 20.0
SYNCNET_MAX_ABS = 4.0
SYNCNET_FRAMES_PER_SECOND = SAMPLE_RATE / SYNCNET_HOP  # 80


@lru_cache(maxsize=None)
def _whisper_filters() -> torch.Tensor:
    # The filter bank Whisper ships (mel_filters.npz) was made by exactly this call.
    return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=WHISPER_N_FFT, n_mels=WHISPER_N_MELS))


@lru_cache(maxsize=None)
def _syncnet_filters() -> np.ndarray:
    return librosa.filters.mel(
        sr=SAMPLE_RATE, n_fft=SYNCNET_N_FFT, n_mels=SYNCNET_N_MELS, fmin=SYNCNET_FMIN, fmax=SYNCNET_FMAX
    )


def _as_signal(wav: np.ndarray | torch.Tensor, min_samples: int) -> np.ndarray:
    """A 1-D float32 numpy copy of the samples, checked for shape, length and finiteness."""
    signal = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    if signal.ndim != 1:
        raise InputError(f"expected mono samples (1-D), got shape {signal.shape}", "use load_audio() to read files")
    if signal.size < min_samples:
        raise InputError(
            f"audio too short: {signal.size} samples ({signal.size / SAMPLE_RATE:.3f} s)",
            f"pass at least {min_samples / SAMPLE_RATE:.3f} s of 16 kHz audio",
        )
    signal = signal.astype(np.float32)
    if not np.isfinite(signal).all():
        raise InputError("audio samples contain NaN or infinity", "check the audio source")
    return signal


def whisper_log_mel(wav: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Whisper's normalised log-mel of a whole 16 kHz clip: (80, len // 160) float32, floor = clip max - 8."""
    signal = torch.from_numpy(_as_signal(wav, min_samples=2 * WHISPER_HOP))
    window = torch.hann_window(WHISPER_N_FFT)
    spectrum = torch.stft(
        signal, WHISPER_N_FFT, WHISPER_HOP, window=window, center=True, pad_mode="reflect", return_complex=True
    )
    power = spectrum[:, :-1].abs() ** 2  # Whisper drops the last STFT frame
    log_mel = torch.log10((_whisper_filters() @ power).clamp(min=1e-10))
    log_mel = torch.maximum(log_mel, log_mel.max() - 8.0)
    return (log_mel + 4.0) / 4.0


def syncnet_mel(wav: np.ndarray | torch.Tensor) -> np.ndarray:
    """The SyncNet mel of a 16 kHz clip (SPEC 4): (80, len // 200 + 1) float32 in [-4, 4], 80 columns per second."""
    signal = _as_signal(wav, min_samples=1).astype(np.float64)
    emphasised = np.append(signal[:1], signal[1:] - SYNCNET_PREEMPHASIS * signal[:-1])
    # librosa >= 0.10 pads with zeros ("constant") by default, which is what the published features used.
    magnitude = np.abs(
        librosa.stft(emphasised, n_fft=SYNCNET_N_FFT, hop_length=SYNCNET_HOP, win_length=SYNCNET_N_FFT, pad_mode="constant")
    )
    min_level = 10.0 ** (SYNCNET_MIN_LEVEL_DB / 20.0)
    level_db = 20.0 * np.log10(np.maximum(min_level, _syncnet_filters() @ magnitude)) - SYNCNET_REF_LEVEL_DB
    scaled = 2 * SYNCNET_MAX_ABS * (level_db - SYNCNET_MIN_LEVEL_DB) / -SYNCNET_MIN_LEVEL_DB - SYNCNET_MAX_ABS
    return np.clip(scaled, -SYNCNET_MAX_ABS, SYNCNET_MAX_ABS).astype(np.float32)


def mel_window_length(num_frames: int) -> int:
    """Columns of the SyncNet mel covering `num_frames` video frames: ceil(num_frames * 3.2) (52 for 16)."""
    return math.ceil(num_frames / 5 * 16)


def mel_window(mel: np.ndarray, start_frame: int, num_frames: int = 16) -> np.ndarray:
    """The SyncNet mel columns for video frames start_frame .. start_frame + num_frames - 1 (25 fps).

    Starts at column int(80 * start_frame / 25). A window that runs past the end of the mel (at most a column or
    two for a clip whose audio matches the video length) is padded at the end with -4, the value of silence;
    a start outside the mel raises InputError.
    """
    length = mel_window_length(num_frames)
    start = int(SYNCNET_FRAMES_PER_SECOND * start_frame / FPS)
    if start_frame < 0 or start >= mel.shape[1]:
        raise InputError(
            f"video frame {start_frame} is outside the audio ({mel.shape[1]} mel columns)",
            "the audio must cover the video frames",
        )
    window = mel[:, start : start + length]
    if window.shape[1] < length:
        window = np.pad(window, ((0, 0), (0, length - window.shape[1])), constant_values=-SYNCNET_MAX_ABS)
    return window
