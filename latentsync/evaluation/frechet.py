"""The Fréchet distance of two Gaussians fitted to feature sets: the core of FID and FVD.

d = |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)), in float64, as the published FID/FVD scripts compute it.
The trace of the matrix square root is taken through symmetric eigendecompositions (see `frechet_distance`),
the same quantity the published scripts get from `scipy.linalg.sqrtm`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of a feature set, with its size."""

    mean: np.ndarray
    cov: np.ndarray
    count: int

    @classmethod
    def of(cls, features: np.ndarray, what: str) -> FeatureStats:
        feats = np.asarray(features, np.float64)
        if feats.ndim != 2 or len(feats) < 2:
            raise InputError(
                f"{what} needs at least 2 feature vectors, got {len(feats) if feats.ndim == 2 else 0}",
                "evaluate more (or longer) videos",
            )
        return cls(feats.mean(axis=0), np.cov(feats, rowvar=False), len(feats))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative rounding noise clipped)."""
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between two fitted Gaussians (float).

    tr(sqrtm(S1 S2)) equals the sum of the square roots of the eigenvalues of the symmetric matrix
    sqrt(S1) S2 sqrt(S1); two symmetric eigendecompositions compute it stably and fast, also for the singular
    covariances of few samples (where the published scripts' `scipy.linalg.sqrtm` is slow and may turn complex).
    """
    diff = a.mean - b.mean
    root_a = _psd_sqrt(a.cov)
    inner = root_a @ b.cov @ root_a
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * trace_root)
