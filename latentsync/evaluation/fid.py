"""FID on face crops: Inception-v3 pool features (see `inception`) of every evaluated frame's face crop."""

from __future__ import annotations

import numpy as np
import torch

from .inception import FIDInception


@torch.no_grad()
def inception_features(model: FIDInception, crops: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """(N, 2048) float64 features of (N, H, W, 3) uint8 RGB crops (the model resizes them to 299 x 299)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(crops), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(crops[start:start + batch_size])).to(device)
        out.append(model(x.permute(0, 3, 1, 2).float() / 255.0).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))
