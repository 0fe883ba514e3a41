"""The configuration a trainer runs with: a published YAML config plus dotted overrides from the command line,
the `run:` / `ckpt:` settings both trainers share (checked), data paths and the audio feature cache folder."""

from __future__ import annotations

import copy
import importlib.util
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError


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
