"""StableSyncNet accuracy over aligned clips (the published `eval/eval_syncnet_acc.py`).

Samples are SyncNet training samples (`latentsync.data.SyncNetDataset`): 16 aligned frames (the lower half,
as the config says) and a mel window that is either theirs (in sync) or another window of the same clip, 50/50.
A sample counts as correct when the cosine similarity is above 0.5 exactly when it is in sync. Sample `i`
depends only on `i` and the seed, so the figure is reproducible; the published script draws them with a
seeded shuffle-free loader over `num_val_samples` (2048) samples, the default here too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import load_config
from ..data import SyncNetDataset
from ..errors import InputError
from ..models import load_syncnet

THRESHOLD = 0.5


@dataclass(frozen=True)
class SyncNetAccuracy:
    accuracy: float
    correct: int
    total: int
    in_sync_accuracy: float  # over the in-sync samples only
    off_sync_accuracy: float  # over the off-sync samples only

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


@torch.no_grad()
def syncnet_accuracy(
    config: str | os.PathLike | Mapping[str, Any],
    checkpoint: str | os.PathLike,
    clips: Sequence[str | os.PathLike],
    *,
    num_samples: int | None = None,
    batch_size: int = 16,
    seed: int = 42,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> SyncNetAccuracy:
    """Accuracy of a StableSyncNet checkpoint on samples cut from aligned clips (`latentsync prepare` output).

    `config`: a published SyncNet YAML (its `model:` and `data:` sections: resolution, num_frames, lower_half,
    num_val_samples); `num_samples` overrides `data.num_val_samples`.
    """
    cfg = load_config(config)
    data = cfg.get("data", {})
    total = int(num_samples or data.get("num_val_samples", 2048))
    if total < 1:
        raise InputError(f"the number of samples must be at least 1, got {total}")
    if not clips:
        raise InputError("no clips to evaluate StableSyncNet on", "pass aligned clips, e.g. prepare's fileslist.txt")
    dataset = SyncNetDataset(
        [Path(c) for c in clips], resolution=int(data.get("resolution", 256)), num_frames=int(data.get("num_frames", 16)),
        lower_half=bool(data.get("lower_half", True)), seed=seed,
    )
    model = load_syncnet(cfg, checkpoint, device=device, dtype=dtype)
    hits = {1.0: [0, 0], 0.0: [0, 0]}  # label -> [correct, count]
    loader = DataLoader(dataset, sampler=range(total), batch_size=batch_size)
    for batch in tqdm(loader, desc="SyncNet accuracy", unit="batch", disable=not progress):
        vision, audio = model(batch["frames"].to(device, dtype), batch["mel"].to(device, dtype))
        scores = torch.nn.functional.cosine_similarity(vision.float(), audio.float()).cpu()
        for label, score in zip(batch["label"].tolist(), scores.tolist()):
            hits[label][0] += int((score > THRESHOLD) == (label > 0.5))
            hits[label][1] += 1
    correct = hits[1.0][0] + hits[0.0][0]
    return SyncNetAccuracy(
        accuracy=correct / total, correct=correct, total=total,
        in_sync_accuracy=hits[1.0][0] / max(hits[1.0][1], 1), off_sync_accuracy=hits[0.0][0] / max(hits[0.0][1], 1),
    )
