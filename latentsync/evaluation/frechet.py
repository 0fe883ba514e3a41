"""The Fréchet distance of two Gaussians fitted to feature sets: the core of FID and FVD.

d = |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)), in float64, as the published FID/FVD scripts compute it.
When the matrix square root is not finite (singular covariances: fewer samples than feature dimensions),
a small ridge (1e-6 I) is added to both covariances, as pytorch-fid does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ..errors import InputError

RIDGE = 1e-6


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of a feature set, with its size."""

    mean: np.ndarray
    cov: np.ndarray
    count: int

    @classmethod
    def of(cls, features: np.ndarray, what: str) -> "FeatureStats":
        feats = np.asarray(features, np.float64)
        if feats.ndim != 2 or len(feats) < 2:
            raise InputError(
                f"{what} needs at least 2 feature vectors, got {len(feats) if feats.ndim == 2 else 0}",
                "evaluate more (or longer) videos",
            )
        return cls(feats.mean(axis=0), np.cov(feats, rowvar=False), len(feats))


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between two fitted Gaussians (float)."""
    diff = a.mean - b.mean
    root, _ = scipy.linalg.sqrtm(a.cov @ b.cov, disp=False)
    if not np.isfinite(root).all():
        ridge = np.eye(len(a.cov)) * RIDGE
        root, _ = scipy.linalg.sqrtm((a.cov + ridge) @ (b.cov + ridge), disp=False)
    root = np.real(root)
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * np.trace(root))
