"""Frame-by-frame comparison with the source video: SSIM and PSNR over the regenerated mouth region, over the
rest of the frame (which lip sync should leave almost untouched), and over the whole frame.

The mouth region of a frame is where the pipeline's mouth mask lands: the published mask's regenerated part
(black in `assets/mask.png`) pasted into the frame along the source video's face track with
`FaceAligner.paste`, the same transform the pipeline pastes its faces back with; pixels where the pasted
mask covers more than half are "mouth".

SSIM is the usual one (Wang et al. 2004): 11 x 11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, data
range 255, computed per RGB channel and averaged over channels; the map has no padding (a 5-pixel border is
left out) and is averaged over each region's pixels. PSNR pools the squared error of a region over all the
frames of a video and is capped at 100 dB (identical pixels).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..face import FaceAligner
from ..pipeline.mask import load_mouth_mask

WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03
PEAK = 255.0
PSNR_CAP = 100.0
REGIONS = ("mouth", "rest", "frame")
MASK_RESOLUTION = 256


def _blur(x: np.ndarray) -> np.ndarray:
    """Gaussian filter of an (H, W, 3) float32 image, valid part only (smaller by WINDOW - 1 on each axis)."""
    g = cv2.getGaussianKernel(WINDOW, SIGMA, cv2.CV_32F)
    border = WINDOW // 2
    return cv2.sepFilter2D(x, cv2.CV_32F, g, g, borderType=cv2.BORDER_REFLECT)[border:-border, border:-border]


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM map (H - 10, W - 10) float32 of two (H, W, 3) uint8 images, averaged over the channels.

    Moments are taken of values centred on 128 (float32 keeps the variances exact enough), the means shifted back.
    OpenCV's separable filter: fast on the CPU, where decoded frames are.
    """
    x = a.astype(np.float32) - 128
    y = b.astype(np.float32) - 128
    mx, my = _blur(x), _blur(y)
    vx = _blur(x * x) - mx * mx
    vy = _blur(y * y) - my * my
    cxy = _blur(x * y) - mx * my
    mx, my = mx + 128, my + 128
    c1, c2 = (K1 * PEAK) ** 2, (K2 * PEAK) ** 2
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return ssim.mean(axis=2)


def mouth_regions(aligner: FaceAligner, mats: np.ndarray, height: int, width: int) -> np.ndarray:
    """(N, H, W) bool: the pipeline's regenerated mouth region for each face-alignment matrix (N, 2, 3)."""
    mask = load_mouth_mask(aligner.resolution)  # 1 keeps, 0 regenerates
    face = np.repeat(((1 - mask) * 255).round().astype(np.uint8)[None, :, :, None], 3, axis=3)
    n = len(mats)
    pasted = aligner.paste(np.zeros((n, height, width, 3), np.uint8), np.repeat(face, n, axis=0), mats)
    return pasted[..., 0] > 127


@dataclass
class RegionTally:
    """Running sums for one video: per-region SSIM per frame, and squared errors for PSNR."""

    ssim: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in REGIONS})
    sq_error: dict[str, float] = field(default_factory=lambda: dict.fromkeys(REGIONS, 0.0))
    values: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REGIONS, 0))

    def add(self, generated: np.ndarray, source: np.ndarray, mouth: np.ndarray) -> None:
        """Add a batch: (N, H, W, 3) uint8 generated and source frames, (N, H, W) bool mouth regions."""
        border = WINDOW // 2
        for gen, src, region in zip(generated, source, mouth):
            smap = ssim_map(gen, src)
            inner = region[border:-border, border:-border]
            sq = np.square(gen.astype(np.float32) - src.astype(np.float32)).sum(axis=2, dtype=np.float64)
            for name, ssim_sel, px_sel in (("mouth", inner, region), ("rest", ~inner, ~region)):
                count = int(px_sel.sum())
                if count:
                    inner_count = int(ssim_sel.sum())
                    self.ssim[name].append(float((smap * ssim_sel).sum() / inner_count) if inner_count else float("nan"))
                    self.sq_error[name] += float((sq * px_sel).sum())
                    self.values[name] += count * 3
            self.ssim["frame"].append(float(smap.mean()))
            self.sq_error["frame"] += float(sq.sum())
            self.values["frame"] += sq.size * 3

    def psnr(self, region: str) -> float | None:
        if not self.values[region]:
            return None
        mse = self.sq_error[region] / self.values[region]
        return PSNR_CAP if mse <= PEAK**2 * 10 ** (-PSNR_CAP / 10) else float(10 * np.log10(PEAK**2 / mse))

    def summary(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for region in REGIONS:
            values = [v for v in self.ssim[region] if np.isfinite(v)]
            out[f"ssim_{region}"] = float(np.mean(values)) if values else None
            out[f"psnr_{region}"] = self.psnr(region)
        return out
