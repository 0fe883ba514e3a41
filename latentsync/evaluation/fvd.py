"""FVD: I3D features of 16-frame face clips, compared by their Fréchet distance.

The I3D network is the one the published FVD code uses: `i3d_torchscript.pt` (component `i3d` of
`latentsync.weights`), a Kinetics-400 Inception-I3D saved as TorchScript, so it is loaded with `torch.jit.load`
(it holds its own code and is not a pickle; load only files from the published source). It is called as
`model(clips, rescale=..., resize=..., return_features=True)` on (N, 3, T, H, W) float clips and returns (N, 400)
pre-softmax features; `rescale=True` maps 0-255 input to [-1, 1] inside the model, `rescale=False` expects
[-1, 1] already; `resize=True` resizes to 224 x 224 inside the model.

Two input conventions (setting `fvd_range`):
- "latentsync" (default): as LatentSync's `eval/fvd.py`: 224 x 224 crops divided by 255, i.e. [0, 1], with
  rescale=False and resize=False. The network expects [-1, 1] there, but this is what produced the published
  numbers, so it is the default for comparable figures.
- "stylegan-v": as StyleGAN-V: 0-255 values with rescale=True and resize=True (the network's own range).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ..errors import CheckpointError, InputError

CLIP_FRAMES = 16
CLIP_SIZE = 224
PUBLISHED_START = 20  # LatentSync's eval_fvd takes frames 20-35 of each video
FEATURES = 400
RANGES = ("latentsync", "stylegan-v")
CLIP_MODES = ("published", "all")


def load_i3d(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The I3D TorchScript module on `device`, in eval mode."""
    try:
        model = torch.jit.load(str(path), map_location=torch.device(device))
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(
            f"cannot load {path} as a TorchScript module: {exc}",
            "i3d_torchscript.pt must be the published TorchScript file (re-download it)",
        ) from exc
    return model.eval()


def clip_starts(present: np.ndarray, mode: str = "published") -> list[int]:
    """First frames of the 16-frame clips taken from a video whose frames with a face are `present`.

    "published": one clip, frames 20-35 when they all show the face, else the first 16 consecutive face frames;
    "all": every non-overlapping run of 16 consecutive face frames, from the start.
    """
    if mode not in CLIP_MODES:
        raise InputError(f"unknown FVD clip mode {mode!r}", f"choose one of {', '.join(CLIP_MODES)}")
    present = np.asarray(present, bool)
    starts, run = [], 0
    for index, ok in enumerate(present):
        run = run + 1 if ok else 0
        if run == CLIP_FRAMES:
            starts.append(index - CLIP_FRAMES + 1)
            run = 0
    if mode == "all" or not starts:
        return starts
    if PUBLISHED_START + CLIP_FRAMES <= len(present) and present[PUBLISHED_START:PUBLISHED_START + CLIP_FRAMES].all():
        return [PUBLISHED_START]
    return starts[:1]


@torch.no_grad()
def i3d_features(model, clips: np.ndarray, value_range: str = "latentsync", batch_size: int = 4) -> np.ndarray:
    """(N, 400) float64 features of (N, 16, 224, 224, 3) uint8 RGB clips."""
    if value_range not in RANGES:
        raise InputError(f"unknown FVD input range {value_range!r}", f"choose one of {', '.join(RANGES)}")
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.shape[1:] != (CLIP_FRAMES, CLIP_SIZE, CLIP_SIZE, 3) or clips.dtype != np.uint8:
        raise InputError(f"FVD clips must be (N, 16, 224, 224, 3) uint8, got {clips.dtype} {clips.shape}")
    device = next(iter(model.parameters()), torch.empty(0)).device
    out = []
    for start in range(0, len(clips), batch_size):
        x = torch.from_numpy(clips[start:start + batch_size]).to(device).permute(0, 4, 1, 2, 3).float()
        if value_range == "latentsync":
            feats = model(x / 255.0, rescale=False, resize=False, return_features=True)
        else:
            feats = model(x, rescale=True, resize=True, return_features=True)
        out.append(feats.double().cpu().numpy().reshape(len(x), -1))
    return np.concatenate(out) if out else np.zeros((0, FEATURES))
