"""What a finished run leaves besides the clips: the file lists (all kept clips, and a train / validation split by
source video), the summary (videos and hours in, kept and rejected per step with reasons) and a PNG with
histograms of the sync confidence, offset and quality scores."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...fileio import atomic_path
from .manifest import Manifest
from .steps import CLIP_STEPS, CLIPS_DIR, VIDEO_STEPS, WORK_DIR

FILESLIST = "fileslist.txt"
SPLIT_LISTS = {"train": "fileslist_train.txt", "val": "fileslist_val.txt"}
SUMMARY = "summary.txt"
SCORES_PNG = "scores.png"


@dataclass
class PrepareReport:
    """A finished run: the kept clips, what each step kept and rejected, and where the outputs are."""

    clips: list[Path] = field(default_factory=list)
    videos: int = 0
    hours_in: float = 0.0
    hours_kept: float = 0.0
    steps: dict[str, dict] = field(default_factory=dict)  # step -> {"in", "kept", "rejected": {reason: n}}
    rejected_videos: dict[str, str] = field(default_factory=dict)  # video -> "step: reason (detail)"
    computed: dict[str, int] = field(default_factory=dict)  # step -> tasks this run ran
    step_seconds: dict[str, float] = field(default_factory=dict)  # step -> worker wall seconds this run spent on it
    step_cpu_seconds: dict[str, float] = field(default_factory=dict)  # step -> worker CPU seconds
    workers: int = 0
    seconds: float = 0.0
    fileslist: Path | None = None
    summary_file: Path | None = None
    scores_png: Path | None = None

    def write_summary(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(self.summary() + "\n")
        self.summary_file = path

    def summary(self) -> str:
        lines = [f"{self.videos} videos in ({self.hours_in:.3f} h); {len(self.clips)} clips kept "
                 f"({self.hours_kept:.3f} h) in {self.seconds:.1f} s"]
        for step, s in self.steps.items():
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(s["rejected"].items()))
            lines.append(f"  {step:>11}: {s['in']} in, {s['kept']} kept" + (f", rejected {reasons}" if reasons else "")
                         + (f" ({self.computed[step]} run now)" if self.computed.get(step) else ""))
        return "\n".join(lines)


def write_outputs(manifest: Manifest, output_dir: Path, settings) -> PrepareReport:
    """File lists, removal of files no clip refers to any more, the summary and the score histograms."""
    report = PrepareReport()
    kept = manifest.rows("clips", "WHERE state = 'kept'", "ORDER BY video, start")
    report.clips = [output_dir / r["path"] for r in kept]
    _write_list(output_dir / FILESLIST, [r["path"] for r in kept])
    for split, name in SPLIT_LISTS.items():
        _write_list(output_dir / name, [r["path"] for r in kept if r["split"] == split])
    report.fileslist = output_dir / FILESLIST
    _sweep(manifest, output_dir)

    videos = manifest.rows("videos", order="ORDER BY video")
    clips = manifest.rows("clips", order="ORDER BY video, start")
    report.videos = len(videos)
    report.hours_in = sum(v["seconds"] or 0 for v in videos) / 3600
    report.hours_kept = sum(r["seconds"] for r in kept) / 3600
    report.rejected_videos = {v["video"]: f"{v['step']}: {v['reason']}" + (f" ({v['detail']})" if v["detail"] else "")
                              for v in videos if v["state"] != "done"}
    report.steps = _step_counts(manifest, videos, clips)
    report.scores_png = _plot_scores(clips, output_dir / SCORES_PNG, settings)
    return report


def _write_list(path: Path, names: list[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{n}\n" for n in names))


def _step_counts(manifest: Manifest, videos: list[dict], clips: list[dict]) -> dict[str, dict]:
    """Per step: items that reached it, kept, rejected by reason (failures count as reason "error")."""
    reached = Counter(step for (step,) in manifest.db.execute(
        "SELECT step FROM steps WHERE item IN (SELECT video FROM videos UNION SELECT clip FROM clips)"))
    counts = {}
    for step in VIDEO_STEPS + CLIP_STEPS:
        if not reached[step]:
            continue
        rows = videos if step in VIDEO_STEPS else clips
        rejected = Counter(r["reason"] for r in rows if r["step"] == step and r["state"] != "kept")
        counts[step] = {"in": reached[step], "kept": reached[step] - sum(rejected.values()), "rejected": dict(rejected)}
    return counts


def _sweep(manifest: Manifest, output_dir: Path) -> None:
    """Delete kept-clip and aligned files that no clip of the manifest refers to (segments of changed settings,
    clips rejected now, videos removed from the input)."""
    referenced = {r["path"] for r in manifest.rows("clips", "WHERE state = 'kept'")}
    for (result,) in manifest.db.execute("SELECT result FROM steps WHERE step IN ('align', 'faces')"):
        if result:
            referenced.update(v for k, v in json.loads(result).items() if k in ("aligned", "track"))
    for folder, pattern in ((CLIPS_DIR, "*.mp4"), (f"{WORK_DIR}/aligned", "*.mov"), (f"{WORK_DIR}/tracks", "*.npz")):
        root = output_dir / folder
        if root.is_dir():
            for path in root.rglob(pattern):
                if path.relative_to(output_dir).as_posix() not in referenced:
                    path.unlink()


def _plot_scores(clips: list[dict], path: Path, settings) -> Path | None:
    """Histograms of the scores of every scored clip, with the thresholds; None when nothing was scored."""
    series = [
        ("sync confidence", [c["sync_confidence"] for c in clips if c["sync_confidence"] is not None],
         [settings.min_sync_confidence]),
        ("sync offset (frames)", [c["sync_offset"] for c in clips if c["sync_offset"] is not None],
         [-settings.max_sync_offset, settings.max_sync_offset]),
        ("HyperIQA quality", [c["quality"] for c in clips if c["quality"] is not None], [settings.min_quality]),
    ]
    if not any(values for _, values, _ in series):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, (title, values, limits) in zip(axes, series):
        if values:
            bins = np.arange(min(values) - 0.5, max(values) + 1.5) if "offset" in title else 30
            ax.hist(values, bins=bins, color="tab:blue")
        for limit in limits:
            ax.axvline(limit, color="tab:red", linestyle="--")
        ax.set_title(f"{title} ({len(values)} clips)")
        ax.set_ylabel("clips")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
