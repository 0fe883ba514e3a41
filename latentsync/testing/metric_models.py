"""Random-weight files for the evaluation metrics, in the published formats (tests and benchmarks).

- `write_random_inception`: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` layout (a plain state dict in
  torchvision Inception3 naming); `divisor` > 1 narrows every layer for fast tests (the loader reads the width).
- `write_random_lpips`: torchvision's `vgg16-397923af.pth` (with a classifier entry, ignored) and the lpips heads.
- `write_random_i3d`: a TorchScript file with the published I3D's call signature
  `model(x, rescale=False, resize=False, return_features=False)` on (N, 3, T, H, W) clips, giving 400 features.
  It is a small 3-D convolution network, not the Inception-I3D architecture: the published file carries its own
  code, so only the container (TorchScript), the call and the output shape matter to the code that loads it;
  `rescale=True` maps 0-255 to [-1, 1] and `resize=True` resizes to 224 x 224, as documented for the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..evaluation.inception import FIDInception, InceptionSizes
from ..models.lpips import LPIPS, VGG16_STAGES

TINY_VGG_STAGES = ((8, 8), (16, 16), (16, 16, 16), (32, 32, 32), (32, 32, 32))


class RandomI3D(nn.Module):
    """Stand-in with the published I3D TorchScript's interface (see the module docstring)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.conv = nn.Conv3d(3, width, kernel_size=(3, 7, 7), stride=(2, 4, 4), padding=(1, 3, 3))
        self.conv2 = nn.Conv3d(width, 2 * width, kernel_size=3, stride=2, padding=1)
        self.logits = nn.Linear(2 * width, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        h = F.relu(self.conv2(F.relu(self.conv(x))))
        features = self.logits(h.mean(dim=(2, 3, 4)))
        if return_features:
            return features
        return F.softmax(features, dim=1)


def write_random_i3d(path: str | Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(RandomI3D().eval()).save(str(path))
    return path


def write_random_inception(path: str | Path, divisor: int = 1, seed: int = 0, counters: bool = False) -> Path:
    """An Inception state dict whose BatchNorm statistics are those of random images (one pass in training
    mode), so that activations stay of order 1 through the 94 layers, as with trained weights."""
    torch.manual_seed(seed)
    model = FIDInception(InceptionSizes(divisor))
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = None  # the running statistics become those of the pass below
    with torch.no_grad():
        model.train()(torch.rand(2, 3, 75, 75))
    state = {k: v for k, v in model.eval().state_dict().items() if counters or not k.endswith("num_batches_tracked")}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def write_random_lpips(vgg_path: str | Path, lin_path: str | Path, stages: Sequence[Sequence[int]] = VGG16_STAGES,
                       seed: int = 0) -> tuple[Path, Path]:
    torch.manual_seed(seed)
    model = LPIPS(stages)
    vgg = {k.removeprefix("vgg."): v.clone() for k, v in model.state_dict().items() if k.startswith("vgg.")}
    vgg["classifier.0.weight"] = torch.zeros(4, 4)  # present in torchvision's file, ignored by the loader
    lins = {f"lin{i}.model.1.weight": lin.weight.detach().abs().clone() for i, lin in enumerate(model.lins)}
    for path, state in ((Path(vgg_path), vgg), (Path(lin_path), lins)):
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
    return Path(vgg_path), Path(lin_path)
