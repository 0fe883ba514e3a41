"""FID's Inception-v3: the TensorFlow 2015-12-05 graph as ported by pytorch-fid, loadable from its weight file.

The file (`pt_inception-2015-12-05-6726825d.pth`, component `inception` of `latentsync.weights`) is a plain
state dict in torchvision's `Inception3` naming (`Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_mean`,
..., `fc.weight` (1008, 2048)), without the auxiliary classifier. Every convolution is bias-free and followed by a
BatchNorm (eps 0.001) and a ReLU. The port differs from torchvision's ImageNet network in four blocks: average
pools that ignore the padding in Mixed_5b-5d, 6b-6e and 7b, and a max pool in Mixed_7c's pool branch.

The features are the 2048 averages of the last block (pytorch-fid's "pool3"), for images given in [0, 1], which
the model resizes to 299 x 299 (bilinear, no antialiasing) and maps to [-1, 1].
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import build_with_weights, load_state_dict
from ..errors import CheckpointError

INPUT_SIZE = 299
FIRST_CONV = "Conv2d_1a_3x3.conv.weight"


@dataclass(frozen=True)
class InceptionSizes:
    """Channel widths: the published network divided by `divisor` (1 for the real weights; more for fast tests)."""

    divisor: int = 1

    def __call__(self, channels: int) -> int:
        return max(1, channels // self.divisor)

    @property
    def features(self) -> int:
        return self(320) + 2 * self(768) + self(192)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> InceptionSizes:
        if FIRST_CONV not in state:
            raise CheckpointError(
                f"not an Inception-v3 state dict: no {FIRST_CONV}",
                "pass pytorch-fid's pt_inception-2015-12-05-6726825d.pth",
            )
        width = int(state[FIRST_CONV].shape[0])
        if width < 1 or 32 % width:
            raise CheckpointError(f"unexpected Inception first-layer width {width}", "the published file has 32")
        return cls(32 // width)


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 0.001), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    """3x3 average pool, stride 1, whose border averages only real pixels (the TensorFlow graph's pooling)."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """Mixed_5b-5d: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, cin: int, pool: int, s: InceptionSizes):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, s(64), 1)
        self.branch5x5_1 = BasicConv2d(cin, s(48), 1)
        self.branch5x5_2 = BasicConv2d(s(48), s(64), 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, s(64), 1)
        self.branch3x3dbl_2 = BasicConv2d(s(64), s(96), 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(s(96), s(96), 3, padding=1)
        self.branch_pool = BasicConv2d(cin, s(pool), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg3(x)),
        ], 1)


class BlockB(nn.Module):
    """Mixed_6a: grid reduction 35 -> 17."""

    def __init__(self, cin: int, s: InceptionSizes):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, s(384), 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, s(64), 1)
        self.branch3x3dbl_2 = BasicConv2d(s(64), s(96), 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(s(96), s(96), 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class BlockC(nn.Module):
    """Mixed_6b-6e: factorised 7x7 branches of width c7."""

    def __init__(self, cin: int, c7: int, s: InceptionSizes):
        super().__init__()
        c7 = s(c7)
        self.branch1x1 = BasicConv2d(cin, s(192), 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, s(192), (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, s(192), (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, s(192), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([self.branch1x1(x), seven, double, self.branch_pool(_avg3(x))], 1)


class BlockD(nn.Module):
    """Mixed_7a: grid reduction 17 -> 8."""

    def __init__(self, cin: int, s: InceptionSizes):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, s(192), 1)
        self.branch3x3_2 = BasicConv2d(s(192), s(320), 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, s(192), 1)
        self.branch7x7x3_2 = BasicConv2d(s(192), s(192), (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(s(192), s(192), (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(s(192), s(192), 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """Mixed_7b / 7c: expanded 1x3 + 3x1 branches; the pool branch averages (7b) or takes the maximum (7c)."""

    def __init__(self, cin: int, s: InceptionSizes, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, s(320), 1)
        self.branch3x3_1 = BasicConv2d(cin, s(384), 1)
        self.branch3x3_2a = BasicConv2d(s(384), s(384), (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(s(384), s(384), (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, s(448), 1)
        self.branch3x3dbl_2 = BasicConv2d(s(448), s(384), 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(s(384), s(384), (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(s(384), s(384), (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, s(192), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),
            self.branch_pool(pooled),
        ], 1)


class FIDInception(nn.Module):
    """`model(images)` -> (N, 2048) pool features of (N, 3, H, W) RGB images in [0, 1]."""

    def __init__(self, sizes: InceptionSizes = InceptionSizes()):
        super().__init__()
        s = sizes
        self.Conv2d_1a_3x3 = BasicConv2d(3, s(32), 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(s(32), s(32), 3)
        self.Conv2d_2b_3x3 = BasicConv2d(s(32), s(64), 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(s(64), s(80), 1)
        self.Conv2d_4a_3x3 = BasicConv2d(s(80), s(192), 3)
        a_out = lambda pool: s(64) + s(64) + s(96) + s(pool)
        self.Mixed_5b = BlockA(s(192), 32, s)
        self.Mixed_5c = BlockA(a_out(32), 64, s)
        self.Mixed_5d = BlockA(a_out(64), 64, s)
        b_out = s(384) + s(96) + a_out(64)
        self.Mixed_6a = BlockB(a_out(64), s)
        c_out = 4 * s(192)
        self.Mixed_6b = BlockC(b_out, 128, s)
        self.Mixed_6c = BlockC(c_out, 160, s)
        self.Mixed_6d = BlockC(c_out, 160, s)
        self.Mixed_6e = BlockC(c_out, 192, s)
        self.Mixed_7a = BlockD(c_out, s)
        d_out = s(320) + s(192) + c_out
        self.Mixed_7b = BlockE(d_out, s, max_pool=False)
        self.Mixed_7c = BlockE(s.features, s, max_pool=True)
        self.fc = nn.Linear(s.features, 1008)  # the 1008-class head of the file; unused for FID

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))


def load_inception(path: str | os.PathLike, device: str | torch.device = "cpu") -> FIDInception:
    """FIDInception from pytorch-fid's weight file (or a file of the same layout); frozen, in eval mode.

    BatchNorm `num_batches_tracked` counters are accepted when present and not required.
    """
    state = {k: v for k, v in load_state_dict(path).items() if not k.endswith("num_batches_tracked")}
    sizes = InceptionSizes.from_state(state)
    with torch.device("meta"):
        probe = FIDInception(sizes)
    counters = {k: torch.zeros((), dtype=torch.long) for k in probe.state_dict() if k.endswith("num_batches_tracked")}
    model = build_with_weights(lambda: FIDInception(sizes), {**state, **counters}, "FID Inception-v3")
    return model.to(device).eval().requires_grad_(False)
