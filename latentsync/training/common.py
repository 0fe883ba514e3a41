"""What every trainer needs besides its model and loss: processes, precision, seeds, the shared `run:` settings,
cache folders, a resumable data order, checkpoints and a metrics log.

One process per device. Under `torchrun` (or `python -m torch.distributed.run`) the environment variables
RANK / WORLD_SIZE / LOCAL_RANK select distributed data parallel training (NCCL on CUDA, gloo on CPU); without
them everything runs in one process. Only the main process writes files; the others wait at a barrier.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import itertools
import json
import logging
import math
import os
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.utils.data import Sampler

from ..checkpoint import check_state_dict, extract_state_dict, read_checkpoint
from ..errors import CheckpointError, InputError
from ..fileio import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")


def apply_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of a published config with dotted entries replaced, e.g. {"data.batch_size": 8, "run.resume": True}.

    This is how the command line reaches the trainers: `--max-steps 100` becomes {"run.max_train_steps": 100},
    `--set optimizer.lr=1e-4` becomes {"optimizer.lr": 1e-4}. Missing sections are created.
    """
    result = copy.deepcopy(dict(config))
    for dotted, value in (overrides or {}).items():
        *parents, last = dotted.split(".")
        node = result
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise InputError(f"cannot set {dotted}: {name} is not a section", "use section.key, e.g. data.batch_size")
        node[last] = value
    return result


def check_plotting() -> None:
    """Fail before training, not at the first chart, when matplotlib (the `train` extra) is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError("training draws metrics.png with matplotlib, which is not installed",
                         "pip install 'latentsync[train]'")


@dataclass(frozen=True)
class RunSettings:
    """The `run:` / `ckpt:` / `optimizer.lr` entries both trainers share, checked (see `run_settings`)."""

    seed: int
    max_train_steps: int | None  # None: no step limit
    max_train_epochs: int | None  # None: no epoch limit
    save_ckpt_steps: int
    log_steps: int
    validation_steps: int
    lr: float

    def total_steps(self, clips: int, samples_per_step: int) -> int:
        """The step the run ends at: the step limit, or the end of the last epoch (a pass over the clips) if sooner."""
        limits = [self.max_train_steps] if self.max_train_steps is not None else []
        if self.max_train_epochs is not None:
            limits.append(self.max_train_epochs * math.ceil(clips / samples_per_step))
        return min(limits)


def run_settings(config: Mapping[str, Any], *, seed: int, save_ckpt_steps: int) -> RunSettings:
    """The shared run settings of a training config; `seed` and `save_ckpt_steps` are the trainer's published
    defaults for a config without them. run.max_train_steps / max_train_epochs: absent or -1 means no limit,
    but one of them must be set."""
    run, ckpt = config.get("run") or {}, config.get("ckpt") or {}
    steps, epochs = (_count(run, key, -1, allow_unset=True) for key in ("max_train_steps", "max_train_epochs"))
    if steps is None and epochs is None:
        raise InputError("the run would never end: run.max_train_steps and run.max_train_epochs are both unset or -1",
                         "set run.max_train_steps (--max-steps) or run.max_train_epochs")
    try:
        seed, lr = int(run.get("seed", seed)), float((config.get("optimizer") or {}).get("lr", 1e-5))
    except (TypeError, ValueError) as exc:
        raise InputError(f"run.seed and optimizer.lr must be numbers: {exc}") from exc
    if not lr > 0:
        raise InputError(f"optimizer.lr must be positive, got {lr}", "the published configs use 1e-5")
    return RunSettings(
        seed=seed, max_train_steps=steps, max_train_epochs=epochs, lr=lr,
        save_ckpt_steps=_count(ckpt, "save_ckpt_steps", save_ckpt_steps, name="ckpt"),
        log_steps=_count(run, "log_steps", 10), validation_steps=_count(run, "validation_steps", 2500),
    )


def _count(section: Mapping[str, Any], key: str, default: int, allow_unset: bool = False, *, name: str = "run"):
    """A whole number >= 1 from a config section (-1: None, where `allow_unset`)."""
    value = section.get(key, default)
    if allow_unset and value == -1:
        return None
    if isinstance(value, float) and value.is_integer():  # YAML reads 1e4 as a float
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name}.{key} must be a whole number, got {value!r}")
    if value < 1:
        raise InputError(f"{name}.{key} must be at least 1, got {value}", "-1 means no limit" if allow_unset else None)
    return value


def configured_path(data: Mapping[str, Any], key: str) -> Path | None:
    """`data.<key>` as a path, or None when empty (the packaged configs leave the authors' cluster paths empty)."""
    value = data.get(key)
    return Path(value).expanduser() if value else None


def cache_folder(data: Mapping[str, Any], key: str, output_dir: Path) -> Path:
    """The audio feature cache: `data.<key>` unless empty, else `output_dir/cache`; created and checked to be
    writable (a clear error names the option to change)."""
    folder = configured_path(data, key) or output_dir / "cache"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"cannot write the audio feature cache {folder}: {exc}",
                         f"set data.{key} (--cache-dir) to a writable folder") from exc
    return folder


@dataclass
class DistInfo:
    """Where this process stands in the job."""

    rank: int
    world_size: int
    device: torch.device
    is_main: bool


def setup_distributed(device: str | None = None) -> DistInfo:
    """Join the process group started by torchrun, or describe a single process.

    `device`: "cpu", "cuda" or "cuda:N"; by default CUDA when available. Under torchrun a CUDA device is always
    the process's local rank, and the backend is NCCL on CUDA, gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if wanted.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("CUDA was asked for but no CUDA device is available", "pass --device cpu")
        index = local_rank if world_size > 1 or wanted.index is None else wanted.index
        wanted = torch.device("cuda", index)
        torch.cuda.set_device(wanted)
    if world_size > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if wanted.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world_size, device=wanted, is_main=rank == 0)


def cleanup_distributed() -> None:
    """Leave the process group, if any (call once at the end of training)."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if torch_dist.is_initialized():
        torch_dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `values` over all processes (the tensor itself in a single process)."""
    if torch_dist.is_initialized():
        values = values.clone()
        torch_dist.all_reduce(values)
    return values


def wrap_ddp(model: nn.Module, dist: DistInfo, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around `model` when several processes train, else the model itself.

    Pass `find_unused_parameters=True` when some trainable parameters get no gradient in a step (e.g. a
    frozen branch that is still marked trainable).
    """
    if dist.world_size == 1:
        return model
    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under DDP / torch.compile wrappers, whose state dict has the published key names."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def autocast_and_scaler(
    device: torch.device | str, mixed_precision: bool, dtype: str = "auto"
) -> tuple[Callable[[], ContextManager], torch.amp.GradScaler | None]:
    """A factory of autocast contexts for the forward pass, and the gradient scaler fp16 needs (else None).

    `dtype`: "auto" (bf16 where the GPU supports it, else fp16), "bf16" or "fp16". On CPU only bf16 is used,
    and only when asked for explicitly; otherwise CPU training runs in fp32.
    """
    device = torch.device(device)
    if dtype not in ("auto", "bf16", "fp16"):
        raise InputError(f"unknown mixed-precision dtype {dtype!r}", 'use "auto", "bf16" or "fp16"')
    if not mixed_precision or (device.type == "cpu" and dtype != "bf16"):
        return contextlib.nullcontext, None
    if device.type == "cuda" and dtype == "auto":
        dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if torch_dtype == torch.float16 else None
    return (lambda: torch.autocast(device.type, dtype=torch_dtype)), scaler


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, NumPy and torch; each rank gets its own stream (seed + rank)."""
    seed = int(seed) + int(rank)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TrainSampler(Sampler[int]):
    """An endless, resumable order of sample ids for one process, `batch_size` ids per optimiser step.

    Each pass over the data is a fresh permutation seeded by (seed, pass). The ids run past the dataset size:
    id = pass * size + position, and the datasets of `latentsync.data` read clip `id % size` and seed their
    random window choice with the id, so each pass also draws new windows. Starting at `start_step` yields
    exactly the ids an uninterrupted run would have used from that step on, on every rank.
    """

    def __init__(self, size: int, batch_size: int, seed: int, dist: DistInfo, start_step: int = 0):
        if size < 1:
            raise InputError("the training set is empty", "check --data-dir / --fileslist")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size, self.start_step = dist.rank, dist.world_size, start_step

    def __iter__(self) -> Iterator[int]:
        permutation_pass, permutation = -1, None
        for step in itertools.count(self.start_step):
            first = (step * self.world_size + self.rank) * self.batch_size  # global position of this batch
            for position in range(first, first + self.batch_size):
                data_pass, offset = divmod(position, self.size)
                if data_pass != permutation_pass:
                    permutation_pass = data_pass
                    permutation = np.random.default_rng([self.seed, data_pass]).permutation(self.size)
                yield data_pass * self.size + int(permutation[offset])

    def __len__(self) -> int:
        return 2**62  # endless; DataLoader only needs a number


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


class MetricsLog:
    """`metrics.jsonl` (one JSON object per logged step) and its chart; only the main process writes.

    `start_step`: when resuming, lines logged after this step by the interrupted run are dropped first, so the
    log reads as one uninterrupted run.
    """

    def __init__(self, output_dir: str | os.PathLike, start_step: int | None = None):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / "metrics.jsonl"
        self.enabled = not torch_dist.is_initialized() or torch_dist.get_rank() == 0
        if self.enabled and start_step is not None and self.path.exists():
            kept = [r for r in self.records() if r["step"] <= start_step]
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def log(self, step: int, **values: float) -> None:
        """Append {"step": step, **values} as one line."""
        if not self.enabled:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}}) + "\n")

    def records(self) -> list[dict]:
        """Every logged line, in order."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def plot(self, path: str | os.PathLike | None = None) -> Path:
        """A PNG with one panel per logged series against the step (default `output_dir/metrics.png`)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path) if path is not None else self.output_dir / "metrics.png"
        if not self.enabled:
            return path
        records = self.records()
        names = sorted({k for r in records for k in r if k != "step"})
        fig, axes = plt.subplots(max(1, len(names)), 1, figsize=(7, 2.4 * max(1, len(names))), squeeze=False)
        for ax, name in zip(axes[:, 0], names):
            points = [(r["step"], r[name]) for r in records if name in r]
            ax.plot(*zip(*points), marker="." if len(points) < 50 else None)
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("step")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)
        return path
