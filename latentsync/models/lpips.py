"""LPIPS-VGG, the perceptual distance of stage-2 U-Net training, loadable from the published weight files.

Two files feed it: torchvision's ImageNet VGG16 (`vgg16-397923af.pth`, keys `features.N.weight/bias`; the
classifier keys are ignored) and the LPIPS v0.1 linear heads (`weights/v0.1/vgg.pth` of the lpips project, keys
`lin0.model.1.weight` (1, 64, 1, 1) ... `lin4.model.1.weight` (1, 512, 1, 1)).

Distance of two images in [-1, 1]: shift and scale the channels, take the activations after relu1_2, relu2_2,
relu3_3, relu4_3 and relu5_3, unit-normalise each position's channel vector, square the difference, weight the
channels with a 1x1 convolution (no bias), average over the positions and sum over the five stages.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import torch
from torch import nn

from ..checkpoint import build_with_weights, load_state_dict
from ..errors import CheckpointError

# Convolution widths of VGG16's five stages; LPIPS reads each stage's last ReLU output.
VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# Input normalisation the LPIPS heads were trained with (inputs in [-1, 1]).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10

_LIN_KEY = re.compile(r"lin(\d+)\.model\.1\.weight")


class VGG16Features(nn.Module):
    """VGG16's convolutional trunk up to relu5_3, laid out as torchvision's `features` so the keys match.

    `stages` gives the convolution widths per stage (VGG16_STAGES for the real network, smaller for tests).
    `forward` returns the last ReLU output of every stage.
    """

    def __init__(self, stages: Sequence[Sequence[int]] = VGG16_STAGES):
        super().__init__()
        layers: list[nn.Module] = []
        self.taps: list[int] = []  # index in `features` of each stage's last ReLU
        channels = 3
        for i, widths in enumerate(stages):
            if i > 0:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            for width in widths:
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU()]
                channels = width
            self.taps.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)  # torchvision's final max-pool (index 30) is not needed

    @property
    def stage_channels(self) -> list[int]:
        return [self.features[tap - 1].out_channels for tap in self.taps]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


class LPIPS(nn.Module):
    """`lpips(a, b)`: per-image perceptual distance (N,) of two image batches (N, 3, H, W) in [-1, 1]."""

    def __init__(self, stages: Sequence[Sequence[int]] = VGG16_STAGES):
        super().__init__()
        self.vgg = VGG16Features(stages)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in self.vgg.stage_channels)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        batch = a.shape[0]
        shift = torch.tensor(SHIFT, device=a.device, dtype=a.dtype).view(1, 3, 1, 1)
        scale = torch.tensor(SCALE, device=a.device, dtype=a.dtype).view(1, 3, 1, 1)
        # One trunk pass for both inputs: fewer kernel launches, same numbers.
        both = (torch.cat([a, b]) - shift) / scale
        distance = torch.zeros(batch, device=a.device, dtype=torch.float32)
        for features, lin in zip(self.vgg(both), self.lins):
            fa, fb = _unit_channels(features[:batch]), _unit_channels(features[batch:])
            distance = distance + lin((fa - fb) ** 2).mean(dim=(1, 2, 3)).float()
        return distance


def _unit_channels(x: torch.Tensor) -> torch.Tensor:
    """Divide every position's channel vector by its L2 norm (+ eps, as LPIPS does)."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + NORM_EPS)


def lpips_state(vgg: dict[str, torch.Tensor], lins: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict from a torchvision VGG16 state dict and an lpips `vgg.pth` state dict."""
    state = {f"vgg.{k}": v for k, v in vgg.items() if k.startswith("features.")}
    for key, value in lins.items():
        match = _LIN_KEY.fullmatch(key)
        if match is None:
            raise CheckpointError(
                f"unexpected key {key!r} in the LPIPS linear-layer file",
                "pass the lpips project's weights/v0.1/vgg.pth",
            )
        state[f"lins.{match.group(1)}.weight"] = value
    return state


def load_lpips(
    vgg_path: str | os.PathLike,
    lin_path: str | os.PathLike,
    stages: Sequence[Sequence[int]] = VGG16_STAGES,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LPIPS:
    """LPIPS from `vgg16-397923af.pth` (torchvision format) and the lpips `vgg.pth` heads; frozen, in eval mode."""
    state = lpips_state(load_state_dict(vgg_path), load_state_dict(lin_path))
    model = build_with_weights(lambda: LPIPS(stages), state, "LPIPS-VGG", dtype)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
