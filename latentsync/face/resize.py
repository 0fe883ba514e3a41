"""Batched image resizing that reproduces OpenCV's ``cv2.resize(..., interpolation=cv2.INTER_LANCZOS4)``.

OpenCV's Lanczos-4 is a plain 8-tap interpolator (no widening of the kernel when shrinking), with
edge pixels repeated past the border. For 8-bit images it works in fixed point: weights are rounded
to multiples of 1/2048, the horizontal pass keeps integer sums and the vertical pass rounds half up.
Here each pass is one matrix product; for uint8 the products are done in float64, where every
intermediate value is an exact integer, so the result is bit-identical to OpenCV.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from latentsync.errors import InputError

_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE: fixed-point weights for 8-bit images
_S45 = math.sqrt(0.5)
# (sin, cos) factors that turn sin(y0) / cos(y0) into sin(y0 + i * 3 pi / 4) for tap i.
_PHASE = np.array(
    [(1, 0), (-_S45, -_S45), (0, 1), (_S45, -_S45), (-1, 0), (_S45, _S45), (0, -1), (-_S45, _S45)]
)


def _lanczos4_taps(frac: np.ndarray) -> np.ndarray:
    """The 8 normalised Lanczos-4 weights for fractional offsets ``frac`` (float32), as OpenCV computes them."""
    three = np.float32(3)
    y0 = -(frac + three).astype(np.float64) * math.pi * 0.25
    s0, c0 = np.sin(y0), np.cos(y0)
    taps = np.empty((frac.size, 8), np.float32)
    total = np.zeros(frac.size, np.float32)
    for i in range(8):
        dist = frac + three - np.float32(i)
        y = -dist.astype(np.float64) * math.pi * 0.25
        with np.errstate(divide="ignore", invalid="ignore"):
            value = ((_PHASE[i, 0] * s0 + _PHASE[i, 1] * c0) / (y * y)).astype(np.float32)
        # A tap sitting exactly on a sample gets a huge weight, so normalising makes it 1 and the rest 0.
        taps[:, i] = np.where(np.abs(dist) >= 1e-6, value, np.float32(1e30))
        total = total + taps[:, i]
    return taps * (np.float32(1) / total)[:, None]


@functools.lru_cache(maxsize=32)
def _lanczos4_matrix(n_in: int, n_out: int, fixed_point: bool) -> np.ndarray:
    """(n_out, n_in) float64 matrix of one resize pass; integer weights (x2048) when ``fixed_point``."""
    scale = 1.0 / (n_out / n_in)  # OpenCV stores the inverse of the inverse scale
    pos = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32)
    start = np.floor(pos)
    taps = _lanczos4_taps((pos - start).astype(np.float32))
    if fixed_point:
        taps = np.rint(taps * np.float32(_COEF_SCALE))
    cols = np.clip(start.astype(np.int64)[:, None] - 3 + np.arange(8), 0, n_in - 1)
    rows = np.repeat(np.arange(n_out), 8).reshape(n_out, 8)
    matrix = np.zeros((n_out, n_in), np.float64)
    np.add.at(matrix, (rows, cols), taps.astype(np.float64))
    return matrix


def resize_lanczos4(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (N, C, H, W) images to ``size`` = (height, width) exactly like OpenCV's Lanczos-4.

    uint8 input gives bit-identical uint8 output (OpenCV's fixed-point path); floating input is
    resized with float weights and keeps its dtype. Runs on the images' device.
    """
    if images.ndim != 4:
        raise InputError(f"resize_lanczos4 expects (N, C, H, W) images, got shape {tuple(images.shape)}.")
    out_h, out_w = int(size[0]), int(size[1])
    if out_h < 1 or out_w < 1:
        raise InputError(f"Cannot resize to {out_h}x{out_w}: both sides must be at least 1.")
    fixed = images.dtype == torch.uint8
    if not fixed and not images.is_floating_point():
        raise InputError(f"resize_lanczos4 expects uint8 or floating images, got {images.dtype}.")
    work = torch.float64 if fixed else images.dtype
    in_h, in_w = images.shape[-2:]
    rows = torch.from_numpy(_lanczos4_matrix(in_h, out_h, fixed)).to(images.device, work)
    cols = torch.from_numpy(_lanczos4_matrix(in_w, out_w, fixed)).to(images.device, work)
    # Horizontal pass first, then vertical, as OpenCV does (it matters only for float rounding).
    out = rows @ (images.to(work) @ cols.T)
    if not fixed:
        return out
    # Both weight sets carry a factor 2048: undo 2^22 with OpenCV's round-half-up and saturate.
    out = torch.floor((out + 2.0**21) / 2.0**22).clamp_(0, 255)
    return out.to(torch.uint8)
