"""The original SyncNet ("S", Chung & Zisserman 2016, 1024-d embeddings) that scores Sync-C / Sync-D (SPEC 12).

Parameter names equal the published `syncnet_v2.model`: four `nn.Sequential` stacks whose indices count the
parameter-free layers (ReLU, pooling) too. The lip stream sees 5 frames of 224 x 224 BGR pixels as raw 0-255
floats; the audio stream sees 13 MFCC coefficients x 20 frames (0.2 s). No I/O in the model; `load_syncnet_v2`
reads the weight file.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..checkpoint import build_with_weights, read_tensor_dict

EMBED_DIM = 1024
LIP_FRAMES = 5
MFCC_STEPS = 20
CROP_SIZE = 224


def _audio_stack() -> nn.Sequential:
    """2-D CNN over (1, 13, 20) MFCC -> (512, 1, 1)."""
    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        *block(1, 64), nn.MaxPool2d(1, 1),  # 0-3: the 1 x 1 pool is a no-op kept for the published numbering
        *block(64, 192), nn.MaxPool2d(3, stride=(1, 2)),  # 4-7
        *block(192, 384),  # 8-10
        *block(384, 256),  # 11-13
        *block(256, 256), nn.MaxPool2d(3, stride=2),  # 14-17
        nn.Conv2d(256, 512, (5, 4)), nn.BatchNorm2d(512), nn.ReLU(inplace=True),  # 18-20
    )


def _lip_stack() -> nn.Sequential:
    """3-D CNN over (3, 5, 224, 224) -> (512, 1, 1, 1); only the first conv mixes time."""
    def flat(cin: int, cout: int, k: int, **kw) -> list[nn.Module]:
        return [nn.Conv3d(cin, cout, (1, k, k), **kw), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]

    return nn.Sequential(
        nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), nn.BatchNorm3d(96), nn.ReLU(inplace=True),  # 0-2
        nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),  # 3
        *flat(96, 256, 5, stride=(1, 2, 2), padding=(0, 1, 1)),  # 4-6
        nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # 7
        *flat(256, 256, 3, padding=(0, 1, 1)),  # 8-10
        *flat(256, 256, 3, padding=(0, 1, 1)),  # 11-13
        *flat(256, 256, 3, padding=(0, 1, 1)),  # 14-16
        nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),  # 17
        *flat(256, 512, 6),  # 18-20
    )


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, EMBED_DIM))


class SyncNetV2(nn.Module):
    """Lip and audio encoders of the original SyncNet; compare embeddings by Euclidean distance."""

    def __init__(self):
        super().__init__()
        self.netcnnaud = _audio_stack()
        self.netfcaud = _head()
        self.netfclip = _head()
        self.netcnnlip = _lip_stack()

    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) float32 BGR 0-255 -> (B, 1024)."""
        return self.netfclip(self.netcnnlip(x).flatten(1))

    def forward_aud(self, m: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) float32 MFCC -> (B, 1024)."""
        return self.netfcaud(self.netcnnaud(m).flatten(1))


def load_syncnet_v2(path: str | os.PathLike, device: str | torch.device = "cpu") -> SyncNetV2:
    """SyncNetV2 in eval mode with the weights of a `syncnet_v2.model` file (a `torch.save` name -> tensor dict).

    Tensors are copied by name; the BatchNorm `num_batches_tracked` counters may be present or absent (the
    published file has none and the published loader never needed them). Any other missing, extra or
    wrongly shaped tensor raises CheckpointError.
    """
    tensors = read_tensor_dict(path, "SyncNet v2", "syncnet_v2.model")
    with torch.device("meta"):
        names = SyncNetV2().state_dict()
    counters = {k: torch.tensor(0) for k in names if k.endswith("num_batches_tracked")}
    state = {**counters, **tensors}
    return build_with_weights(SyncNetV2, state, "SyncNet v2").eval().to(device)
