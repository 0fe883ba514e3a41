"""HyperIQA (Su et al. 2020), the visual-quality filter of the published data pipeline (KonIQ-10k weights).

A ResNet-50 backbone gives 7 x 7 semantic features and a 224-d "local distortion" vector (pooled features of
all four stages). A hyper network turns the semantic features into the weights and biases of a small per-image
target network (224 -> 112 -> 56 -> 28 -> 14 -> 1, sigmoids between), which maps the vector to a quality score
(KonIQ scale, roughly 0-100). The conv outputs become target weights by a plain memory-order reshape, e.g.
fc1 (512, 7, 7) -> (112, 224). Parameter names equal the published `koniq_pretrained.pkl`; the published
constructor first downloads ImageNet ResNet-50 weights that the checkpoint then overwrites, which is not needed here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..checkpoint import build_with_weights, read_tensor_dict
from ..errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP = 224
KEEP_THRESHOLD = 40.0  # the published filter keeps clips scoring at least this


@dataclass(frozen=True)
class HyperNetSizes:
    """The published `HyperNet(16, 112, 224, 112, 56, 28, 14, 7)` arguments."""

    lda_out: int = 16  # width of each of the first three local-distortion vectors
    hyper_in: int = 112  # channels of the hyper network's input features
    target_in: int = 224  # target network input width (3 x 16 + 176)
    target_fc: tuple[int, int, int, int] = (112, 56, 28, 14)
    feature_size: int = 7  # spatial size of the semantic features


class Bottleneck(nn.Module):
    """ResNet v1 bottleneck (1x1, strided 3x3, 1x1, x4 channels) with an optional projection shortcut."""

    def __init__(self, cin: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _stage(cin: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(*[Bottleneck(cin if i == 0 else planes * 4, planes, stride if i == 0 else 1) for i in range(blocks)])


def _lda_pool(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(7, stride=7))


class ResNet50Backbone(nn.Module):
    """ResNet-50 returning layer4's features and the concatenated local-distortion vector."""

    def __init__(self, sizes: HyperNetSizes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = _stage(64, 64, 3, 1)
        self.layer2 = _stage(256, 128, 4, 2)
        self.layer3 = _stage(512, 256, 6, 2)
        self.layer4 = _stage(1024, 512, 3, 2)
        # at 224 px input: 56, 28, 14, 7 px maps pooled by 7 -> 8 x 8, 4 x 4, 2 x 2, 1 x 1 cells
        self.lda1_pool = _lda_pool(256, 16)
        self.lda1_fc = nn.Linear(16 * 64, sizes.lda_out)
        self.lda2_pool = _lda_pool(512, 32)
        self.lda2_fc = nn.Linear(32 * 16, sizes.lda_out)
        self.lda3_pool = _lda_pool(1024, 64)
        self.lda3_fc = nn.Linear(64 * 4, sizes.lda_out)
        self.lda4_pool = nn.AvgPool2d(7, stride=7)
        self.lda4_fc = nn.Linear(2048, sizes.target_in - 3 * sizes.lda_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        parts = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            parts.append(getattr(self, f"lda{i}_fc")(getattr(self, f"lda{i}_pool")(x).flatten(1)))
        return x, torch.cat(parts, 1)


class HyperNet(nn.Module):
    """Backbone + hyper network: `forward` returns the target network's parameters and input per image."""

    def __init__(self, sizes: HyperNetSizes = HyperNetSizes()):
        super().__init__()
        self.sizes = sizes
        f1, f2, f3, f4 = sizes.target_fc
        hyper, area = sizes.hyper_in, sizes.feature_size**2
        self.res = ResNet50Backbone(sizes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Sequential(
            nn.Conv2d(2048, 1024, 1), nn.ReLU(inplace=True),
            nn.Conv2d(1024, 512, 1), nn.ReLU(inplace=True),
            nn.Conv2d(512, hyper, 1), nn.ReLU(inplace=True),
        )
        self.fc1w_conv = nn.Conv2d(hyper, sizes.target_in * f1 // area, 3, padding=1)
        self.fc1b_fc = nn.Linear(hyper, f1)
        self.fc2w_conv = nn.Conv2d(hyper, f1 * f2 // area, 3, padding=1)
        self.fc2b_fc = nn.Linear(hyper, f2)
        self.fc3w_conv = nn.Conv2d(hyper, f2 * f3 // area, 3, padding=1)
        self.fc3b_fc = nn.Linear(hyper, f3)
        self.fc4w_conv = nn.Conv2d(hyper, f3 * f4 // area, 3, padding=1)
        self.fc4b_fc = nn.Linear(hyper, f4)
        self.fc5w_fc = nn.Linear(hyper, f4)
        self.fc5b_fc = nn.Linear(hyper, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, 224, 224) normalised RGB -> target parameters named as published (`target_fc1w` (B, 112, 224, 1, 1)...)."""
        features, vec = self.res(x)
        batch = x.shape[0]
        dims = (self.sizes.target_in, *self.sizes.target_fc, 1)
        feat = self.conv1(features)
        pooled = self.pool(feat).flatten(1)
        out = {"target_in_vec": vec.view(batch, -1, 1, 1)}
        for i in range(1, 5):
            out[f"target_fc{i}w"] = getattr(self, f"fc{i}w_conv")(feat).reshape(batch, dims[i], dims[i - 1], 1, 1)
            out[f"target_fc{i}b"] = getattr(self, f"fc{i}b_fc")(pooled)
        out["target_fc5w"] = self.fc5w_fc(pooled).view(batch, 1, dims[4], 1, 1)
        out["target_fc5b"] = self.fc5b_fc(pooled)
        return out


def target_scores(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B,) scores of each image's own target network: four sigmoid layers and a linear output."""
    q = params["target_in_vec"].flatten(1)
    for i in range(1, 6):
        weight = params[f"target_fc{i}w"].flatten(2)  # (B, out, in)
        q = torch.bmm(weight, q.unsqueeze(2)).squeeze(2) + params[f"target_fc{i}b"]
        if i < 5:
            q = torch.sigmoid(q)
    return q[:, 0]


def prepare_frames(frames_rgb_uint8: np.ndarray) -> torch.Tensor:
    """(K, H, W, 3) uint8 RGB -> (K, 3, 224, 224): /255, centre crop without resizing, ImageNet normalisation."""
    frames = np.asarray(frames_rgb_uint8)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or len(frames) == 0:
        raise InputError(f"HyperIQA needs (K, H, W, 3) uint8 RGB frames, got {frames.dtype} {frames.shape}",
                         "pass frames of an aligned 256 x 256 clip")
    height, width = frames.shape[1:3]
    if height < CROP or width < CROP:
        raise InputError(f"HyperIQA needs frames of at least {CROP} x {CROP} pixels, got {width} x {height}",
                         "pass the 256 x 256 aligned clips of the data pipeline")
    top, left = int(round((height - CROP) / 2.0)), int(round((width - CROP) / 2.0))
    crop = torch.from_numpy(np.ascontiguousarray(frames[:, top : top + CROP, left : left + CROP])).permute(0, 3, 1, 2)
    crop = crop.float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (crop - mean) / std


@dataclass
class HyperIQA:
    """HyperIQA on a device."""

    net: HyperNet
    device: torch.device

    @torch.inference_mode()
    def frame_scores(self, frames_rgb_uint8: np.ndarray) -> np.ndarray:
        """(K,) float32 quality score of each frame's centre crop."""
        params = self.net(prepare_frames(frames_rgb_uint8).to(self.device))
        return target_scores(params).float().cpu().numpy()

    def score(self, frames_rgb_uint8: np.ndarray) -> float:
        """The clip score of the published filter: the mean of the frames' scores (keep when >= 40)."""
        return float(np.mean(self.frame_scores(frames_rgb_uint8)))


def iqa_frame_indices(num_frames: int) -> list[int]:
    """The frames the published filter scores: first, middle (n // 2) and last."""
    if num_frames <= 0:
        raise InputError("the clip has no frames", "pass an aligned clip with at least one frame")
    return [0, num_frames // 2, num_frames - 1]


def read_iqa_frames(path: str | os.PathLike) -> np.ndarray:
    """(3, H, W, 3) uint8 RGB: frames 0, n // 2 and n - 1 of a clip file at its own frame rate."""
    from ..media import probe_video, read_frames

    info = probe_video(path)
    indices = iqa_frame_indices(info.frames_at(info.fps))
    return np.stack([frame for _, frame in read_frames(path, info.fps, indices)])


def load_hyperiqa(path: str | os.PathLike, device: str | torch.device = "cpu") -> HyperIQA:
    """HyperIQA in eval mode with the weights of a published `koniq_pretrained.pkl` (a `torch.save` name -> tensor dict)."""
    state = read_tensor_dict(path, "HyperIQA", "koniq_pretrained.pkl")
    net = build_with_weights(HyperNet, state, "HyperIQA").eval().to(device)
    return HyperIQA(net, torch.device(device))
