"""Sync-C / Sync-D (LSE-C / LSE-D) of a face-crop video, as the published evaluation computes them (SPEC 12).

Window v pairs lip frames v..v+4 (25 fps) with MFCC columns 4v..4v+19 (100 per second). For every window and
every shift k in -15..15 the lip embedding is compared with the audio embedding of window v + k (zero vectors
beyond the clip); the distances are averaged over windows per shift. Sync-D is the smallest mean distance,
the offset is the shift that gives it (positive: the matching audio comes earlier than the video), and Sync-C
is the median of the 31 means minus the smallest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .mfcc_features import mfcc
from .syncnet_v2 import CROP_SIZE, LIP_FRAMES, MFCC_STEPS, SyncNetV2

FPS = 25
MFCC_PER_FRAME = 4  # 100 MFCC frames a second / 25 video frames a second
SAMPLES_PER_FRAME = 640  # 16000 / 25
VSHIFT = 15
FRAMEWISE_MEDIAN_TAPS = 9


@dataclass(frozen=True)
class SyncResult:
    """Sync of one face track.

    offset: frames, positive when the matching audio comes earlier than the video; sync_d: the smallest mean
    distance (lower is better); sync_c: median minus smallest mean distance (higher is better); mean_dists:
    (2 * vshift + 1,) mean distance per shift, index k is shift vshift - k; dists: (W, 2 * vshift + 1) per
    window; framewise_conf: (W,) median of mean_dists minus each window's distance at the chosen shift, and
    framewise_conf_smoothed its 9-tap median filter (zero padded). Window v starts at video frame v.
    """

    offset: int
    sync_d: float
    sync_c: float
    mean_dists: np.ndarray
    dists: np.ndarray
    framewise_conf: np.ndarray
    framewise_conf_smoothed: np.ndarray

    @property
    def num_windows(self) -> int:
        return len(self.framewise_conf)

    @property
    def window_times(self) -> np.ndarray:
        """Start time in seconds of each window (window v starts at frame v, within the frames scored)."""
        return np.arange(self.num_windows) / FPS


@dataclass(frozen=True)
class CombinedSync:
    """Several face tracks of one video combined as published: offset = int(mean offset), confidence = mean."""

    offset: int
    sync_c: float
    sync_d: float  # mean Sync-D of the tracks (the published script prints only offset and confidence)
    num_tracks: int


def median_filter(values: np.ndarray, taps: int) -> np.ndarray:
    """Running median of odd length `taps` with zero padding at both ends (scipy.signal.medfilt's behaviour)."""
    half = taps // 2
    padded = np.concatenate([np.zeros(half, values.dtype), values, np.zeros(half, values.dtype)])
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, taps), axis=1).astype(values.dtype)


def num_windows(num_frames: int, num_samples: int) -> int:
    """Windows scored for a clip: min(frames, floor(samples / 640)) - 5 (the last frame is never used)."""
    return min(num_frames, num_samples // SAMPLES_PER_FRAME) - LIP_FRAMES


def _net_device(net: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    return next(net.parameters()).device if device is None else torch.device(device)


@torch.inference_mode()
def embed_windows(
    net: SyncNetV2,
    frames_bgr_uint8: np.ndarray,
    mfcc_features: np.ndarray,
    windows: int,
    *,
    batch_size: int = 20,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio embeddings ((W, 1024) float32 on the CPU each) of the first `windows` windows."""
    device = _net_device(net, device)
    cepstra = torch.from_numpy(np.ascontiguousarray(mfcc_features.T)).float().to(device)  # (13, T)
    lips, auds = [], []
    for start in range(0, windows, batch_size):
        stop = min(windows, start + batch_size)
        clip = torch.from_numpy(frames_bgr_uint8[start : stop + LIP_FRAMES - 1]).to(device)
        clip = clip.permute(3, 0, 1, 2).float()  # (3, T, H, W), raw 0-255 BGR values
        lip_in = clip.unfold(1, LIP_FRAMES, 1).permute(1, 0, 4, 2, 3)  # (B, 3, 5, H, W)
        cols = cepstra[:, start * MFCC_PER_FRAME : (stop - 1) * MFCC_PER_FRAME + MFCC_STEPS]
        aud_in = cols.unfold(1, MFCC_STEPS, MFCC_PER_FRAME).permute(1, 0, 2).unsqueeze(1)  # (B, 1, 13, 20)
        lips.append(net.forward_lip(lip_in.contiguous()).float().cpu())
        auds.append(net.forward_aud(aud_in.contiguous()).float().cpu())
    return torch.cat(lips), torch.cat(auds)


def offset_distances(lip: torch.Tensor, aud: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """(W, 2 * vshift + 1): distance of lip embedding i to audio embedding i + k - vshift (zeros outside)."""
    padded = F.pad(aud, (0, 0, vshift, vshift))
    candidates = padded.unfold(0, 2 * vshift + 1, 1).permute(0, 2, 1)  # (W, 31, D)
    return F.pairwise_distance(lip[:, None, :], candidates)  # adds 1e-6 to the difference, as published


def sync_from_embeddings(lip: torch.Tensor, aud: torch.Tensor, vshift: int = VSHIFT) -> SyncResult:
    """Offset, Sync-D, Sync-C and per-window confidence from (W, D) lip and audio embeddings of the same windows."""
    if lip.shape != aud.shape or lip.ndim != 2 or len(lip) == 0:
        raise ValueError(f"need equal non-empty (W, D) embeddings, got {tuple(lip.shape)} and {tuple(aud.shape)}")
    dists = offset_distances(lip.float(), aud.float(), vshift)
    mean_dists = dists.mean(0)
    min_dist, minidx = torch.min(mean_dists, 0)
    median = torch.median(mean_dists)
    framewise = (median - dists[:, minidx]).numpy()
    return SyncResult(
        offset=int(vshift - minidx),
        sync_d=float(min_dist),
        sync_c=float(median - min_dist),
        mean_dists=mean_dists.numpy(),
        dists=dists.numpy(),
        framewise_conf=framewise,
        framewise_conf_smoothed=median_filter(framewise, FRAMEWISE_MEDIAN_TAPS),
    )


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise InputError(f"face crops must be (N, H, W, 3) uint8 BGR, got {frames.dtype} {frames.shape}",
                         "pass 224 x 224 BGR crops, e.g. from latentsync.evaluation.crops")
    if frames.shape[1:3] != (CROP_SIZE, CROP_SIZE):  # the published evaluation resizes every frame to 224 x 224
        frames = np.stack([cv2.resize(f, (CROP_SIZE, CROP_SIZE)) for f in frames])
    return np.ascontiguousarray(frames)


def sync_confidence(
    net: SyncNetV2,
    frames_bgr_uint8: np.ndarray,
    samples_int16: np.ndarray,
    *,
    vshift: int = VSHIFT,
    batch_size: int = 20,
    device: str | torch.device | None = None,
) -> SyncResult:
    """Sync-C / Sync-D of (N, 224, 224, 3) uint8 BGR face crops at 25 fps and their 16 kHz int16 audio.

    `net` must already be on `device` (default: wherever it is). Raises InputError when the clip is too short
    for one window (6 frames and 3840 samples, 0.24 s).
    """
    frames = _check_frames(frames_bgr_uint8)
    samples = np.asarray(samples_int16)
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise InputError(f"audio must be 1-D int16 samples at 16 kHz, got {samples.dtype} {samples.shape}",
                         "convert float samples with np.round(x * 32768).astype(np.int16)")
    windows = num_windows(len(frames), len(samples))
    if windows <= 0:
        raise InputError(f"{len(frames)} frames and {len(samples)} audio samples are too short for Sync-C / Sync-D",
                         "pass at least 6 frames (0.24 s) of video with audio as long")
    lip, aud = embed_windows(net, frames, mfcc(samples), windows, batch_size=batch_size, device=device)
    return sync_from_embeddings(lip, aud, vshift)


def combine_tracks(results: Sequence[SyncResult]) -> CombinedSync:
    """The published rule for several face tracks: offset = int(mean of offsets) (toward 0), confidence = mean."""
    if not results:
        raise ValueError("no track results to combine")
    return CombinedSync(
        offset=int(np.mean([r.offset for r in results])),
        sync_c=float(np.mean([r.sync_c for r in results])),
        sync_d=float(np.mean([r.sync_d for r in results])),
        num_tracks=len(results),
    )
