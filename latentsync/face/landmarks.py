"""The three alignment anchors (SPEC 5) from a detector's landmarks.

Anchor order everywhere: image-left eyebrow centre, image-right eyebrow centre, nose centre, as (x, y).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# InsightFace 2d106det point indices averaged into each anchor (published LatentSync definition).
INSIGHTFACE_106_GROUPS: tuple[tuple[int, ...], ...] = (
    (43, 48, 49, 51, 50),
    (101, 102, 103, 104, 105),
    (74, 77, 83, 86),
)

# MediaPipe face-mesh vertices for the same anchors: the top of each eyebrow (two vertices, mirror images
# of each other across the face) and the nose ridge between the eyes. Chosen as the vertices nearest to the
# published anchors of demo1 (tests/data/golden); no correction term is added, see detectors/mediapipe.py.
MEDIAPIPE_468_GROUPS: tuple[tuple[int, ...], ...] = ((104, 105), (333, 334), (195, 197))


def _group_means(landmarks: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
    pts = np.asarray(landmarks, dtype=np.float64)
    return np.stack([pts[..., list(g), :].mean(axis=-2) for g in groups], axis=-2)


def anchors_from_106(landmarks: np.ndarray) -> np.ndarray:
    """(..., 106, 2) InsightFace landmarks -> (..., 3, 2) float anchors.

    Like the published code, the 106 points are rounded to integers before averaging; the anchors
    themselves are rounded later, when a face track is built.
    """
    return _group_means(np.round(landmarks), INSIGHTFACE_106_GROUPS)


def anchors_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """(..., 468+, 2) MediaPipe face-mesh points in pixels -> (..., 3, 2) float anchors."""
    return _group_means(mesh, MEDIAPIPE_468_GROUPS)


def round_anchors(points: np.ndarray) -> np.ndarray:
    """Round anchors to integer pixels as the published alignment does (numpy's round half to even)."""
    return np.round(np.asarray(points, dtype=np.float64)).astype(np.int32)
