"""InsightFace `buffalo_l` backend (the published detector): SCRFD `det_10g` boxes, then `2d106det` landmarks.

Both networks run with onnxruntime; the pre- and post-processing is written here, so the `insightface`
package is not needed. Settings follow the published LatentSync detector: detection on a 512 x 512
letterbox, score >= 0.5, NMS at IoU 0.4. The published code hands RGB frames to InsightFace, which
assumes BGR and swaps the channels, so both networks really see BGR; this module reproduces that.
"""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np

from ...errors import CheckpointError
from ...weights import DEFAULT_VERSION, resolve
from ..landmarks import anchors_from_106
from .base import Detections, FaceDetector

log = logging.getLogger(__name__)

DET_FILE = "det_10g.onnx"  # inside the buffalo_l folder
LANDMARK_FILE = "2d106det.onnx"

STRIDES = (8, 16, 32)
ANCHORS_PER_LOCATION = 2
DET_MEAN, DET_STD = 127.5, 128.0
# 2d106det normalises inside the graph (InsightFace reports mean 0, std 1 for it).
LANDMARK_MEAN, LANDMARK_STD = 0.0, 1.0
LANDMARK_SIZE = 192
NUM_LANDMARKS = 106


def providers_for(device: str) -> list:
    """onnxruntime execution providers for a torch-style device string ("cpu", "cuda", "cuda:1")."""
    import onnxruntime as ort

    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            index = int(str(device).partition(":")[2] or 0)
            return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        log.warning("onnxruntime has no CUDA provider here; the face detector runs on the CPU")
    return ["CPUExecutionProvider"]


def open_session(path: str | os.PathLike, device: str = "cpu"):
    """An onnxruntime session for a model file, with a clear error for an unreadable file."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=providers_for(device))
    except Exception as exc:  # onnxruntime raises several private exception types
        raise CheckpointError(f"cannot load the ONNX model {path}: {exc}", "re-download the face weights") from exc


def letterbox(frame: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio into the top-left corner of a black (height, width) = size canvas.

    Returns the canvas and the scale factor from frame to canvas pixels.
    """
    height, width = size
    ratio = frame.shape[0] / frame.shape[1]
    if ratio > height / width:
        new_h = height
        new_w = max(1, int(new_h / ratio))
    else:
        new_w = width
        new_h = max(1, int(new_w * ratio))
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(frame, (new_w, new_h))
    return canvas, new_h / frame.shape[0]


def to_blob(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> (1, 3, H, W) float32 network input in BGR order, (x - mean) / std."""
    bgr = image[:, :, ::-1].astype(np.float32)
    return ((bgr - mean) / std).transpose(2, 0, 1)[None].copy()


def decode_scrfd(
    outputs: list[np.ndarray], input_hw: tuple[int, int], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """SCRFD head outputs -> boxes (K, 4) and scores (K,) in network-input pixels, before NMS.

    `outputs` are the 9 model outputs: scores for strides 8/16/32, then box distances, then keypoint
    offsets (the five SCRFD keypoints are not used: the 106-point model gives the landmarks). Anchors sit
    at every stride-th pixel, 2 per location; a box is given by its distances to the anchor centre
    (left, top, right, bottom) in units of the stride.
    """
    if len(outputs) < 2 * len(STRIDES):
        raise CheckpointError(f"the face detector has {len(outputs)} outputs; an SCRFD model has 9")
    boxes, scores = [], []
    for level, stride in enumerate(STRIDES):
        score = outputs[level].reshape(-1)
        dist = outputs[level + len(STRIDES)].reshape(-1, 4) * stride
        rows, cols = input_hw[0] // stride, input_hw[1] // stride
        ys, xs = np.mgrid[0:rows, 0:cols]
        centres = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * stride
        centres = np.repeat(centres, ANCHORS_PER_LOCATION, axis=0)
        if len(centres) != len(score) or len(dist) != len(score):
            raise CheckpointError(
                f"SCRFD output for stride {stride} has {len(score)} scores and {len(dist)} boxes, "
                f"expected {len(centres)} for a {input_hw[1]}x{input_hw[0]} input"
            )
        # Boxes with a non-positive side (possible only with broken weights) are no faces.
        keep = (score >= threshold) & (dist[:, 0] + dist[:, 2] > 0) & (dist[:, 1] + dist[:, 3] > 0)
        c, d = centres[keep], dist[keep]
        boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
        scores.append(score[keep])
    return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first (InsightFace's +1 pixel areas)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def landmark_crop_matrix(box: np.ndarray, size: int = LANDMARK_SIZE) -> np.ndarray:
    """2 x 3 affine matrix mapping the frame to the landmark input: box centre to the crop centre,
    the box's larger side * 1.5 to `size` pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    scale = size / (max(x2 - x1, y2 - y1, 1.0) * 1.5)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([[scale, 0.0, size / 2 - cx * scale], [0.0, scale, size / 2 - cy * scale]])


class InsightFaceDetector(FaceDetector):
    """SCRFD + 2d106det from ONNX files (see module docstring)."""

    name = "insightface"

    def __init__(
        self,
        det_model: str | os.PathLike,
        landmark_model: str | os.PathLike,
        device: str = "cpu",
        det_size: int = 512,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
    ):
        self.det = open_session(det_model, device)
        self.landmark = open_session(landmark_model, device)
        shape = self.det.get_inputs()[0].shape
        # A model exported with a fixed input size dictates it; dynamic ones use det_size.
        fixed = all(isinstance(v, int) and v > 0 for v in shape[2:4])
        self.det_hw = (shape[2], shape[3]) if fixed else (det_size, det_size)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold

    @classmethod
    def from_weights(
        cls,
        version: str = DEFAULT_VERSION,
        checkpoint_dir: str | os.PathLike | None = None,
        device: str = "cpu",
        offline: bool = False,
    ) -> "InsightFaceDetector":
        """The buffalo_l models found (or downloaded, unless offline) through `latentsync.weights`."""
        folder = resolve(["face"], version, checkpoint_dir, offline)["face"]
        return cls(folder / DET_FILE, folder / LANDMARK_FILE, device)

    def detect_boxes(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face boxes (K, 4) and scores (K,) in frame pixels, best first, for a checked RGB frame."""
        canvas, scale = letterbox(frame, self.det_hw)
        inputs = {self.det.get_inputs()[0].name: to_blob(canvas, DET_MEAN, DET_STD)}
        outputs = self.det.run(None, inputs)
        boxes, scores = decode_scrfd(outputs, self.det_hw, self.score_threshold)
        keep = nms(boxes, scores, self.nms_threshold)
        return boxes[keep] / scale, scores[keep]

    def landmarks106(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The 106 landmarks (106, 2) in frame pixels of the face in `box`."""
        matrix = landmark_crop_matrix(box)
        crop = cv2.warpAffine(frame, matrix, (LANDMARK_SIZE, LANDMARK_SIZE), borderValue=0)
        inputs = {self.landmark.get_inputs()[0].name: to_blob(crop, LANDMARK_MEAN, LANDMARK_STD)}
        pred = self.landmark.run(None, inputs)[0].reshape(-1, 2)[-NUM_LANDMARKS:]
        crop_pts = (pred.astype(np.float64) + 1) * (LANDMARK_SIZE // 2)
        inverse = cv2.invertAffineTransform(matrix)
        return crop_pts @ inverse[:, :2].T + inverse[:, 2]

    def _detect(self, frame: np.ndarray) -> Detections:
        boxes, scores = self.detect_boxes(frame)
        points = [anchors_from_106(self.landmarks106(frame, box)) for box in boxes]
        return Detections.stack(boxes, scores, points)
