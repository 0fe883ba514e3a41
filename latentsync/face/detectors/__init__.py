"""Face detector backends behind one interface (`FaceDetector`), and picking one (`create_detector`).

Backends: "insightface" (the published SCRFD + 2d106det, needs the buffalo_l weights), "mediapipe"
(offline, models inside the wheel), "auto" (insightface when its weights are on disk, else mediapipe).
"""

from __future__ import annotations

import logging
import os

from ...errors import InputError
from ...weights import DEFAULT_VERSION, has_components
from .base import Detections, FaceDetector, as_rgb_frame

log = logging.getLogger(__name__)

BACKENDS = ("auto", "insightface", "mediapipe")

__all__ = ["BACKENDS", "Detections", "FaceDetector", "as_rgb_frame", "create_detector"]


def create_detector(
    backend: str = "auto",
    checkpoint_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    offline: bool = False,
    version: str = DEFAULT_VERSION,
) -> FaceDetector:
    """Build a face detector; the chosen backend is in the result's `name` and logged.

    "insightface" downloads the buffalo_l weights when missing (unless `offline`, which raises
    MissingWeightsError); "auto" never downloads: it takes insightface only if the weights are local.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown face detector backend {backend!r}", f"choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "insightface" if has_components(["face"], version, checkpoint_dir) else "mediapipe"
    if backend == "insightface":
        from .insightface import InsightFaceDetector

        detector: FaceDetector = InsightFaceDetector.from_weights(version, checkpoint_dir, device, offline)
    else:
        from .mediapipe import MediaPipeDetector

        detector = MediaPipeDetector()
    log.info("face detector: %s", detector.name)
    return detector
