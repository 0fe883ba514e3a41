"""S3FD (Zhang et al. 2017), the face detector of the published Sync-C / Sync-D evaluation and sync filter.

Parameter names equal the published `sfd_face.pth`. A frame is resized by a scale factor (OpenCV bilinear; the
size is rounded half to even, 482 x 0.25 -> 120), the RGB means (123, 117, 104) are subtracted, and six heads
(strides 4 ... 128, anchor sizes 16 ... 512) predict box offsets and face/background logits. The detection stage
then decodes the boxes (variances 0.1, 0.2), keeps face probabilities above 0.05, runs NMS at IoU 0.3 (at most
5,000 candidates in, 750 out); `detect` keeps rows strictly above the confidence threshold, scales them to the
original frame and runs a second NMS at IoU 0.1. Boxes are not clipped to the frame.

Several frames of the same size go through the network in one call (`detect_batch`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import build_with_weights, read_tensor_dict
from ..errors import InputError

RGB_MEAN = (123.0, 117.0, 104.0)
STRIDES = (4, 8, 16, 32, 64, 128)
ANCHOR_SIZES = (16, 32, 64, 128, 256, 512)
VARIANCES = (0.1, 0.2)
SCORE_FLOOR = 0.05  # candidates below this face probability are dropped before NMS
NMS_IOU = 0.3
NMS_MAX_IN = 5000
NMS_MAX_OUT = 750
FINAL_NMS_IOU = 0.1
MIN_INPUT = 28  # px per side of the network input; smaller maps vanish in the fifth pooling


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (for the shallow VGG features)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
        return x / norm * self.weight.view(1, -1, 1, 1)


def _vgg() -> nn.ModuleList:
    """VGG-16 to conv5_3, then the dilated fc6 and 1 x 1 fc7; indices as published (ReLU and pools counted)."""
    layers: list[nn.Module] = []

    def convs(cin: int, cout: int, n: int) -> None:
        for i in range(n):
            layers.extend([nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.ReLU(inplace=True)])

    convs(3, 64, 2); layers.append(nn.MaxPool2d(2, 2))  # 0-4
    convs(64, 128, 2); layers.append(nn.MaxPool2d(2, 2))  # 5-9
    convs(128, 256, 3); layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))  # 10-16: this pool rounds up
    convs(256, 512, 3); layers.append(nn.MaxPool2d(2, 2))  # 17-23
    convs(512, 512, 3); layers.append(nn.MaxPool2d(2, 2))  # 24-30
    layers.extend([nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.ReLU(inplace=True)])  # 31-32
    layers.extend([nn.Conv2d(1024, 1024, 1), nn.ReLU(inplace=True)])  # 33-34
    return nn.ModuleList(layers)


# The VGG index after which each of the first four sources is taken, and its L2Norm (None: fc7, unnormalised).
_SOURCE_ENDS = ((16, "L2Norm3_3"), (23, "L2Norm4_3"), (30, "L2Norm5_3"), (35, None))
_SOURCE_CHANNELS = (256, 512, 512, 1024, 512, 256)


class S3FDNet(nn.Module):
    """The S3FD network; `forward` returns the head outputs the detection stage needs."""

    def __init__(self):
        super().__init__()
        self.vgg = _vgg()
        self.L2Norm3_3 = L2Norm(256)
        self.L2Norm4_3 = L2Norm(512)
        self.L2Norm5_3 = L2Norm(512)
        self.extras = nn.ModuleList([
            nn.Conv2d(1024, 256, 1), nn.Conv2d(256, 512, 3, stride=2, padding=1),
            nn.Conv2d(512, 128, 1), nn.Conv2d(128, 256, 3, stride=2, padding=1),
        ])
        self.loc = nn.ModuleList([nn.Conv2d(c, 4, 3, padding=1) for c in _SOURCE_CHANNELS])
        # the stride-4 head predicts 3 background logits and 1 face logit ("max-out" background label)
        self.conf = nn.ModuleList([nn.Conv2d(c, 4 if i == 0 else 2, 3, padding=1) for i, c in enumerate(_SOURCE_CHANNELS)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """(B, 3, H, W) mean-subtracted RGB -> loc (B, P, 4), face/background softmax (B, P, 2), head map sizes."""
        sources = []
        start = 0
        for end, norm in _SOURCE_ENDS:
            for layer in self.vgg[start:end]:
                x = layer(x)
            sources.append(getattr(self, norm)(x) if norm else x)
            start = end
        for k, layer in enumerate(self.extras):
            x = F.relu(layer(x))
            if k % 2 == 1:
                sources.append(x)
        locs, confs = [], []
        for i, source in enumerate(sources):
            conf = self.conf[i](source)
            if i == 0:
                conf = torch.cat([conf[:, :3].max(dim=1, keepdim=True).values, conf[:, 3:]], dim=1)
            locs.append(self.loc[i](source).permute(0, 2, 3, 1).flatten(1))
            confs.append(conf.permute(0, 2, 3, 1).flatten(1))
        batch = x.shape[0]
        loc = torch.cat(locs, 1).view(batch, -1, 4)
        conf = torch.cat(confs, 1).view(batch, -1, 2).softmax(dim=-1)
        return loc, conf, [tuple(s.shape[2:]) for s in sources]


def prior_boxes(input_hw: tuple[int, int], head_sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(P, 4) anchors cx, cy, w, h normalised by the network input size; head by head, cells row by row."""
    height, width = input_hw
    rows = []
    for (fh, fw), stride, size in zip(head_sizes, STRIDES, ANCHOR_SIZES):
        i, j = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx = (j.ravel() + 0.5) / (width / stride)
        cy = (i.ravel() + 0.5) / (height / stride)
        rows.append(np.stack([cx, cy, np.full_like(cx, size / width), np.full_like(cy, size / height)], 1))
    return torch.from_numpy(np.concatenate(rows)).float()


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """(P, 4) offsets -> (P, 4) normalised x1, y1, x2, y2 (SSD box coding)."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCES[1])
    top_left = centre - size / 2
    return torch.cat([top_left, top_left + size], 1)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou: float, max_in: int | None = None) -> np.ndarray:
    """Indices kept by greedy NMS, best score first: a box is dropped when its IoU with a kept one exceeds `iou`.

    Areas without the +1 pixel convention, IoU = inter / ((area_other - inter) + area_kept), in the dtype of the
    inputs (float32 for the network stage, float64 for the final stage), as published. `max_in` keeps only the
    best scores before suppression.
    """
    order = np.argsort(-scores, kind="stable")
    if max_in is not None:
        order = order[:max_in]
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    area = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.clip(np.minimum(x2[rest], x2[best]) - np.maximum(x1[rest], x1[best]), 0, None)
        h = np.clip(np.minimum(y2[rest], y2[best]) - np.maximum(y1[rest], y1[best]), 0, None)
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            overlap = inter / ((area[rest] - inter) + area[best])
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def detection_stage(loc: torch.Tensor, conf: torch.Tensor, priors: torch.Tensor) -> list[np.ndarray]:
    """Per image, (K <= 750, 5) float32 rows score, x1, y1, x2, y2 (normalised), best first: the face rows of the
    published detection output (its class-1 slice without the zero padding)."""
    out = []
    for image_loc, image_conf in zip(loc.float().cpu(), conf.float().cpu()):
        boxes = decode_boxes(image_loc, priors).numpy()
        scores = image_conf[:, 1].numpy()
        mask = scores > SCORE_FLOOR
        boxes, scores = boxes[mask], scores[mask]
        keep = greedy_nms(boxes, scores, NMS_IOU, NMS_MAX_IN)[:NMS_MAX_OUT]
        out.append(np.concatenate([scores[keep, None], boxes[keep]], 1).astype(np.float32))
    return out


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(w, h) OpenCV gives a resize by factor `scale`: each side times the factor, rounded half to even."""
    return int(np.rint(width * scale)), int(np.rint(height * scale))


@dataclass
class S3FD:
    """An S3FD detector on a device; frames are RGB uint8."""

    net: S3FDNet
    device: torch.device

    def prepare(self, frames_rgb_uint8: Sequence[np.ndarray], scale: float) -> torch.Tensor:
        """(B, 3, h, w) float32 network input: each frame resized by `scale`, minus the RGB means."""
        resized = [cv2.resize(f, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) for f in frames_rgb_uint8]
        batch = torch.from_numpy(np.stack(resized)).to(self.device).float()
        return (batch - torch.tensor(RGB_MEAN, device=self.device)).permute(0, 3, 1, 2).contiguous()

    @torch.inference_mode()
    def face_rows(self, frames_rgb_uint8: Sequence[np.ndarray], scale: float = 0.25) -> list[np.ndarray]:
        """The network and detection stage for frames of one size: per frame (K, 5) normalised rows, best first."""
        x = self.prepare(frames_rgb_uint8, scale)
        loc, conf, heads = self.net(x)
        return detection_stage(loc, conf, prior_boxes(tuple(x.shape[2:]), heads))

    def detect_batch(
        self, frames_rgb_uint8: Sequence[np.ndarray], threshold: float = 0.9, scale: float = 0.25
    ) -> list[np.ndarray]:
        """Faces in each of several frames of the same size: per frame (N, 5) float64 x1, y1, x2, y2, score."""
        frames = [_check_frame(f) for f in frames_rgb_uint8]
        if not frames:
            return []
        if len({f.shape for f in frames}) != 1:
            raise InputError("frames given to one S3FD batch differ in size", "batch frames of one video together")
        height, width = frames[0].shape[:2]
        if min(scaled_size(width, height, scale)) < MIN_INPUT:
            raise InputError(f"a {width} x {height} frame at scale {scale} is too small for S3FD",
                             f"pass frames whose sides times the scale are at least {MIN_INPUT} px")
        size = np.array([width, height, width, height], np.float32)
        out = []
        for rows in self.face_rows(frames, scale):
            out.append(final_boxes(rows, threshold, size))
        return out

    def detect(self, frame_rgb_uint8: np.ndarray, threshold: float = 0.9, scale: float = 0.25) -> np.ndarray:
        """(N, 5) float64 x1, y1, x2, y2, score in frame pixels of one RGB uint8 frame, best score first."""
        return self.detect_batch([frame_rgb_uint8], threshold, scale)[0]


def candidates(rows: np.ndarray, threshold: float, size: np.ndarray) -> np.ndarray:
    """Rows scoring strictly above `threshold` as (K, 5) float64 x1, y1, x2, y2, score in frame pixels."""
    rows = rows[rows[:, 0] > threshold]
    return np.concatenate([(rows[:, 1:] * size).astype(np.float64), rows[:, :1].astype(np.float64)], 1)


def final_boxes(rows: np.ndarray, threshold: float, size: np.ndarray) -> np.ndarray:
    """`candidates` after the second NMS (IoU 0.1, float64)."""
    boxes = candidates(rows, threshold, size)
    return boxes[greedy_nms(boxes[:, :4], boxes[:, 4], FINAL_NMS_IOU)] if len(boxes) else boxes


def _check_frame(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise InputError(f"S3FD needs (H, W, 3) uint8 RGB frames, got {got}", "convert the frame to uint8 RGB")
    return frame


def load_s3fd(path: str | os.PathLike, device: str | torch.device = "cpu") -> S3FD:
    """S3FD with the weights of a published `sfd_face.pth` (a `torch.save` name -> tensor dict), in eval mode."""
    state = read_tensor_dict(path, "S3FD", "sfd_face.pth")
    net = build_with_weights(S3FDNet, state, "S3FD").eval().to(device)
    return S3FD(net, torch.device(device))
