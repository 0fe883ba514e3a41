"""MediaPipe backend: works offline with the models shipped inside the mediapipe wheel.

Two stages per frame. MediaPipe's face detectors (short and full range) give face boxes; each face is then
meshed (468 points) in a square crop around its box, where the face is large. Meshing the whole frame
instead lets the mesh inherit the detector's coarse box on a 128 px image: on the fixtures its eyebrow
points then sit visibly on the forehead, and the anchors jitter 2-4 times more (tracking mode is in
between). On video, the faces of the previous frame are also meshed again from their boxes, so a face that
the detectors miss on one frame is kept.

The box of a face is the extent of its mesh (forehead to chin, cheek to cheek, close to an SCRFD face
box); the score is 1.0: the face mesh does not expose a confidence, and the detectors already drop faces
under 0.5 (the published threshold). Anchors: `latentsync.face.landmarks.anchors_from_mesh`.

Validation of the anchors against the published InsightFace ones (tests/data/golden, demo1 frames 0-5, at
1080p and on the 360p copy scaled by 3): mean distance 4.5 px for an eyebrow distance of 110 px, mean
offset per anchor at most 4.4 px; InsightFace itself jitters about 6 px from frame to frame there, so no
correction term is fitted. Faces aligned from either set of anchors look the same by eye, with eyebrows
and nose on the template points.
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from ..landmarks import anchors_from_mesh
from .base import Detections, FaceDetector, as_rgb_frame, box_iou

SAME_FACE_IOU = 0.3  # boxes overlapping this much are one face
CROP_SCALE = 2.0  # side of the crop a face is meshed in, relative to its box's larger side
MIN_CROP = 8  # px; smaller crops hold no face


@contextlib.contextmanager
def _native_stderr_silenced():
    """MediaPipe's C++ runtime writes start-up warnings straight to file descriptor 2, where they would land
    in the middle of progress bars; Python-level redirection cannot catch them."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _extent(mesh: np.ndarray) -> np.ndarray:
    """Box (4,) x1, y1, x2, y2 around mesh points."""
    return np.concatenate([mesh.min(axis=0), mesh.max(axis=0)])


def _is_new(box: np.ndarray, boxes: list[np.ndarray]) -> bool:
    return not boxes or box_iou(box, np.array(boxes)).max() < SAME_FACE_IOU


class MediaPipeDetector(FaceDetector):
    """MediaPipe face detection + face mesh, up to `max_faces` faces per frame (see module docstring)."""

    name = "mediapipe"

    def __init__(self, max_faces: int = 4, min_confidence: float = 0.5):
        self.max_faces = max_faces
        with _native_stderr_silenced():
            import mediapipe  # slow import (TensorFlow Lite runtime): only when this backend is used

            solutions = mediapipe.solutions
            self._finders = [
                solutions.face_detection.FaceDetection(model_selection=model, min_detection_confidence=min_confidence)
                for model in (0, 1)  # short range (faces filling much of the frame), full range (small faces)
            ]
            # Static mode: each crop is a new image. Two faces at most in a crop: ours and a close neighbour.
            self._mesh = solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=2, refine_landmarks=False, min_detection_confidence=min_confidence
            )
            # The graphs log their one-time start-up warnings on the first image...
            blank = np.zeros((64, 64, 3), np.uint8)
            for graph in (*self._finders, self._mesh):
                graph.process(blank)
        self._meshed_a_face = False  # ...and the mesh one more on its first face
        self._previous = np.zeros((0, 4))

    def _found_boxes(self, frame: np.ndarray) -> list[np.ndarray]:
        """Face boxes from both detectors, in pixels."""
        height, width = frame.shape[:2]
        boxes = []
        for finder in self._finders:
            for det in finder.process(frame).detections or []:
                b = det.location_data.relative_bounding_box
                boxes.append(np.array([b.xmin * width, b.ymin * height,
                                       (b.xmin + b.width) * width, (b.ymin + b.height) * height]))
        return boxes

    def _mesh_in_crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The mesh (468, 2) in frame pixels of the face in `box`, found in a crop around it, or None."""
        height, width = frame.shape[:2]
        half = CROP_SCALE * max(box[2] - box[0], box[3] - box[1]) / 2
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
        x1, y1 = int(min(cx + half, width)), int(min(cy + half, height))
        if x1 - x0 < MIN_CROP or y1 - y0 < MIN_CROP:
            return None
        crop = np.ascontiguousarray(frame[y0:y1, x0:x1])
        if self._meshed_a_face:
            result = self._mesh.process(crop)
        else:
            with _native_stderr_silenced():
                result = self._mesh.process(crop)
            self._meshed_a_face = bool(result.multi_face_landmarks)
        scale, offset = np.array([x1 - x0, y1 - y0]), np.array([x0, y0])
        meshes = [np.array([(p.x, p.y) for p in face.landmark]) * scale + offset
                  for face in result.multi_face_landmarks or []]
        if not meshes:
            return None
        overlap = box_iou(box, np.array([_extent(m) for m in meshes]))
        best = int(np.argmax(overlap))
        return meshes[best] if overlap[best] >= SAME_FACE_IOU else None

    def _mesh_faces(self, frame: np.ndarray, hints: list[np.ndarray]) -> Detections:
        """Mesh each distinct face among the hint boxes (earlier hints win)."""
        tried, boxes, points = [], [], []
        for hint in hints:
            if len(boxes) == self.max_faces or not _is_new(hint, tried):
                continue
            tried.append(hint)
            mesh = self._mesh_in_crop(frame, hint)
            if mesh is not None and _is_new(_extent(mesh), boxes):
                boxes.append(_extent(mesh))
                points.append(anchors_from_mesh(mesh))
        return Detections.stack(boxes, [1.0] * len(boxes), points)

    def _detect(self, frame: np.ndarray) -> Detections:
        return self._mesh_faces(frame, self._found_boxes(frame))

    def detect_next(self, frame: np.ndarray) -> Detections:
        frame = as_rgb_frame(frame)
        found = self._mesh_faces(frame, list(self._previous) + self._found_boxes(frame))
        self._previous = found.boxes.astype(np.float64)
        return found

    def reset(self) -> None:
        self._previous = np.zeros((0, 4))

    def close(self) -> None:
        self.reset()
        self._mesh.close()
        for finder in self._finders:
            finder.close()
