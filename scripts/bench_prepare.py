"""Throughput of each step of `latentsync prepare` on this machine, in seconds per minute of input video.

    python scripts/bench_prepare.py --input raw_videos/ --out bench_prepare.json [--workers N] [--resolution 256]

Runs the whole chain (every step on, thresholds open so that every segment goes through every step) into a fresh
temporary folder. SyncNet, S3FD and HyperIQA use the weights under --checkpoint-dir, or else random weights of the
published formats (the test files): the compute is that of the published models, the scores are meaningless.
Step figures are worker wall time and worker CPU time (all threads of the worker process, which is what counts
on a shared machine); totals are wall time, wall time x the machine's cores, and the CPU time of workers + driver.

The published pipeline's reported speed, for comparison: 2 h 47 min per 1,000 videos (bytedance/LatentSync
issue 208, VoxCeleb2, one machine). VoxCeleb2 holds 2,442 h in 1,128,246 videos (7.8 s each), so that is
10,020 s per 130 min of video = 77 s per minute of input on that machine; the authors processed VoxCeleb2 in
1-2 weeks on 180 CPU cores (and 8 GPUs), i.e. 180 x 1.5 weeks / 2,442 h = 1,114 core-seconds per minute of input.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANDOM_WEIGHTS = ROOT / "tests" / "data" / "golden" / "eval"
PUBLISHED = {
    "wall_hours_per_1000_videos": 2 + 47 / 60,
    "mean_video_seconds": 2442 * 3600 / 1128246,  # VoxCeleb2
    "authors_cores": 180,
    "authors_weeks_for_voxceleb2": 1.5,
}

from latentsync.data.prepare import PrepareSettings, prepare_dataset  # noqa: E402
from latentsync.data.prepare.steps import CLIP_STEPS, VIDEO_STEPS  # noqa: E402


def random_checkpoints(folder: Path) -> Path:
    """The published `auxiliary/` layout holding random weights of the filters' formats."""
    aux = folder / "auxiliary"
    aux.mkdir(parents=True)
    for source, name in (("syncnet_v2_random.model", "syncnet_v2.model"), ("sfd_face_random.pth", "sfd_face.pth"),
                         ("koniq_random.pkl", "koniq_pretrained.pkl")):
        shutil.copy(RANDOM_WEIGHTS / source, aux / name)
    return folder


def per_minute(seconds: dict[str, float], minutes: float) -> dict[str, float]:
    return {step: round(seconds[step] / minutes, 2) for step in VIDEO_STEPS + CLIP_STEPS if step in seconds}


def published_figures() -> dict:
    p = PUBLISHED
    minutes_per_1000 = 1000 * p["mean_video_seconds"] / 60
    wall_s_per_min = p["wall_hours_per_1000_videos"] * 3600 / minutes_per_1000
    core_s_per_min = p["authors_cores"] * p["authors_weeks_for_voxceleb2"] * 7 * 86400 / (2442 * 60)
    return {**p, "wall_s_per_input_min": round(wall_s_per_min, 1), "authors_core_s_per_input_min": round(core_s_per_min)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=ROOT / "tests" / "data" / "media", help="folder of videos")
    parser.add_argument("--out", type=Path, default=Path("bench_prepare.json"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--face-backend", default="auto")
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--checkpoint-dir", type=Path, help="real weights (default: random ones of the same format)")
    args = parser.parse_args()

    main_started = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = args.checkpoint_dir or random_checkpoints(Path(tmp) / "checkpoints")
        settings = PrepareSettings(args.resolution, args.min_seconds, args.max_seconds, args.face_backend,
                                   min_sync_confidence=-1e9, max_sync_offset=1e9, min_quality=-1e9)
        report = prepare_dataset(args.input, Path(tmp) / "out", settings, workers=args.workers,
                                 checkpoint_dir=checkpoints, offline=True, progress=False)
    main_cpu = time.process_time() - main_started  # the driver: scheduling, manifest, file lists
    minutes = report.hours_in * 60  # of the readable videos
    ours = round(report.seconds / minutes, 1)
    result = {
        "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "input": {"folder": str(args.input), "videos": report.videos, "minutes": round(minutes, 3)},
        "settings": {"resolution": args.resolution, "workers": report.workers, "face_backend": args.face_backend,
                     "segments_s": [args.min_seconds, args.max_seconds],
                     "weights": "given" if args.checkpoint_dir else "random (published formats)"},
        "clips": len(report.clips),
        "steps_worker_s_per_input_min": per_minute(report.step_seconds, minutes),
        "steps_cpu_s_per_input_min": per_minute(report.step_cpu_seconds, minutes),
        "steps_tasks": report.computed,
        "total_wall_s": round(report.seconds, 1),
        "total_wall_s_per_input_min": ours,
        "total_core_s_per_input_min": round(ours * os.cpu_count(), 1),  # wall time x this machine's cores
        "total_cpu_s_per_input_min": round((sum(report.step_cpu_seconds.values()) + main_cpu) / minutes, 1),
        "published": published_figures(),
    }
    pub = result["published"]
    result["comparison"] = {
        "published_wall_s_per_input_min": pub["wall_s_per_input_min"],
        "ours_cpu_s_per_input_min": result["total_cpu_s_per_input_min"],
        "published_core_s_per_input_min_180_cores": pub["authors_core_s_per_input_min"],
        "published_over_ours_per_core": round(pub["authors_core_s_per_input_min"] / result["total_cpu_s_per_input_min"], 2),
        "ours_wall_on_180_cores_s_per_input_min": round(result["total_cpu_s_per_input_min"] / 180, 2),
        "ours_hours_per_1000_voxceleb2_videos_on_180_cores": round(
            result["total_cpu_s_per_input_min"] / 180 * 1000 * pub["mean_video_seconds"] / 60 / 3600, 3),
    }
    args.out.write_text(json.dumps(result, indent=1))
    print(report.summary())
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
