"""The detector interface shared by all face backends, and the frame checks they all apply."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...errors import InputError


@dataclass(frozen=True)
class Detections:
    """The faces found in one frame (K >= 0), in frame pixel coordinates.

    boxes: (K, 4) float x1, y1, x2, y2; scores: (K,) float; points: (K, 3, 2) float alignment anchors
    (image-left eyebrow, image-right eyebrow, nose), see `latentsync.face.landmarks`.
    """

    boxes: np.ndarray
    scores: np.ndarray
    points: np.ndarray

    def __post_init__(self):
        k = len(self.boxes)
        if self.boxes.shape != (k, 4) or self.scores.shape != (k,) or self.points.shape != (k, 3, 2):
            raise ValueError(
                f"inconsistent detections: boxes {self.boxes.shape}, scores {self.scores.shape}, "
                f"points {self.points.shape}"
            )

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 3, 2), np.float32))

    @classmethod
    def stack(cls, boxes: Sequence, scores: Sequence, points: Sequence) -> "Detections":
        """Build from per-face sequences (possibly empty)."""
        if len(boxes) == 0:
            return cls.empty()
        return cls(
            np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(scores, np.float32).reshape(-1),
            np.asarray(points, np.float32).reshape(-1, 3, 2),
        )


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one (4,) box with each of (K, 4) boxes."""
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    union = _area(box) + _area(boxes) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def as_rgb_frame(frame: np.ndarray) -> np.ndarray:
    """Check one frame and return it as a contiguous (H, W, 3) uint8 RGB array.

    Grayscale frames, (H, W) or (H, W, 1), are converted by repeating the channel (videos with a gray
    pixel format decode that way); any other channel count, a dtype other than uint8 or an empty frame
    raises InputError.
    """
    if not isinstance(frame, np.ndarray):
        raise InputError(f"a frame must be a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise InputError(
            f"frames must be uint8 RGB, got dtype {frame.dtype}",
            "convert with np.clip(x, 0, 255).astype(np.uint8) (or x * 255 for [0, 1] floats)",
        )
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3):
        raise InputError(f"frames must be (H, W, 3) RGB or (H, W) grayscale, got shape {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise InputError(f"empty frame of shape {frame.shape}")
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    return np.ascontiguousarray(frame)


class FaceDetector(ABC):
    """A face backend. `detect` sees independent images; `detect_next` sees the frames of one video in
    order and may use what it saw before (tracking); `reset` starts a new video."""

    #: backend name, reported in logs and stored in face tracks
    name: str = ""

    @abstractmethod
    def _detect(self, frame: np.ndarray) -> Detections:
        """Detect in a checked (H, W, 3) uint8 RGB frame."""

    def detect(self, frame: np.ndarray) -> Detections:
        """All faces in one RGB uint8 frame (grayscale is converted; see `as_rgb_frame`)."""
        return self._detect(as_rgb_frame(frame))

    def detect_next(self, frame: np.ndarray) -> Detections:
        """Faces in the next frame of the current video; backends without tracking just detect."""
        return self.detect(frame)

    def reset(self) -> None:
        """Forget video state, so that the next `detect_next` starts a new video."""

    def close(self) -> None:
        """Release backend resources."""
        self.reset()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
