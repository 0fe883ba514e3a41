"""The metrics log of a run: `metrics.jsonl` and its chart `metrics.png`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch.distributed as torch_dist

from ..fileio import atomic_path


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
