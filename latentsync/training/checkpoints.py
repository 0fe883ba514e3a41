"""Training checkpoints: `output_dir/checkpoints/checkpoint-<step>.pt`, written atomically by the main process,
loadable by the model loaders like a published checkpoint, and the state a resumed run continues from."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Mapping

import torch
import torch.distributed as torch_dist
from torch import nn

from ..checkpoint import check_state_dict, extract_state_dict, read_checkpoint
from ..errors import CheckpointError
from ..fileio import atomic_path
from .distributed import barrier, unwrap_model

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")


def save_checkpoint(
    output_dir: str | os.PathLike,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write `output_dir/checkpoints/checkpoint-<step>.pt` atomically (main process); every process returns its path.

    Content: {"state_dict": the unwrapped model's weights (published key names, on the CPU), "global_step": step,
    "optimizer": ..., "scaler": ...}; the file loads with the model loaders like a published checkpoint.
    """
    path = Path(output_dir) / CHECKPOINT_DIR / f"checkpoint-{step}.pt"
    if not torch_dist.is_initialized() or torch_dist.get_rank() == 0:
        state = {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}
        content = {"state_dict": state, "global_step": int(step)}
        if optimizer is not None:
            content["optimizer"] = optimizer.state_dict()
        if scaler is not None:
            content["scaler"] = scaler.state_dict()
        with atomic_path(path) as tmp:
            torch.save(content, tmp)
        log.info("saved %s", path)
    barrier()
    return path


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step in `output_dir/checkpoints`, or None."""
    folder = Path(output_dir) / CHECKPOINT_DIR
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint-*.pt") if (m := _CHECKPOINT_NAME.match(p.name))]
    return max(found)[1] if found else None


def load_training_state(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> int:
    """Restore model (and optimiser / scaler state when present) from a training checkpoint; returns its global step."""
    path = Path(path)
    try:
        content = read_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(exc.message, "delete it to resume from the checkpoint before it") from exc
    if not isinstance(content, Mapping) or "state_dict" not in content:
        raise CheckpointError(f"{path} is not a training checkpoint", 'expected {"state_dict": ..., "global_step": N}')
    state, target = extract_state_dict(content), unwrap_model(model)
    check_state_dict(target, state, str(path))
    target.load_state_dict(state)
    if optimizer is not None and "optimizer" in content:
        try:
            optimizer.load_state_dict(content["optimizer"])
        except (ValueError, KeyError, IndexError, RuntimeError) as exc:
            raise CheckpointError(
                f"cannot restore the optimiser state of {path}: {exc}",
                "run.trainable_modules or the optimizer settings changed since this checkpoint: restore them, "
                "or start in a new output folder",
            ) from exc
    if scaler is not None and "scaler" in content:
        scaler.load_state_dict(content["scaler"])
    return int(content.get("global_step", 0))
