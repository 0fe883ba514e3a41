"""`latentsync prepare`: raw talking-head videos -> aligned, filtered training clips (the published data pipeline)."""

from __future__ import annotations

import argparse

from ..errors import InputError

SHOW_REJECTED = 20  # rejected videos listed at the end; the manifest has them all


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="turn raw talking-head videos into aligned, filtered face clips for training")
    p.add_argument("input_dir", help="folder of videos (searched recursively)")
    p.add_argument("output_dir", help="clips, fileslist.txt, manifest.sqlite (re-running resumes)")
    # Options left out keep PrepareSettings' defaults (see prepare_settings); the module loads only when it runs.
    p.add_argument("--resolution", type=int, help="side of the aligned face: 256 (1.5) or 512 (1.6); default 256")
    p.add_argument("--face-backend", choices=["auto", "insightface", "mediapipe"], help="face detector")
    p.add_argument("--min-seconds", type=float, help="shortest segment (default 5)")
    p.add_argument("--max-seconds", type=float, help="longest segment (default 10)")
    p.add_argument("--skip", action="append", default=[], metavar="STEP",
                   help="switch a step off: resample, shots, sync, quality (repeatable or comma-separated)")
    p.add_argument("--shot-threshold", type=float, help="PySceneDetect adaptive threshold (default 2)")
    p.add_argument("--min-face-size", type=float, help="face filter: shortest side of the face box in px (default off)")
    p.add_argument("--max-faces", type=int, help="face filter: most faces on a clip's first/middle/last frame (default off)")
    p.add_argument("--min-sync-confidence", type=float, help="keep clips with SyncNet confidence >= this (default 3)")
    p.add_argument("--max-sync-offset", type=float, help="keep clips with |SyncNet offset| <= this, in frames (default 6)")
    p.add_argument("--min-quality", type=float, help="keep clips with HyperIQA score >= this (default 40)")
    p.add_argument("--val-fraction", type=float, help="share of source videos held out for validation (default 0.05)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: a process pool on this machine; ray: Ray tasks (a cluster with --ray-address)")
    p.add_argument("--workers", type=int, help="worker processes (local) or CPUs of a local Ray (default: cores - 1)")
    p.add_argument("--ray-address", help="address of a running Ray cluster (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--checkpoint-dir", help="weights in the published checkpoints/ layout (auxiliary/syncnet_v2.model, ...)")
    p.add_argument("--offline", action="store_true", help="never download weights")
    p.add_argument("--device", default="cpu", help="device for face detection and alignment (cpu, cuda)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_prepare)


def prepare_settings(args: argparse.Namespace):
    """The `PrepareSettings` of the options given; the others keep its defaults."""
    from ..data.prepare import PrepareSettings

    names = ("resolution", "face_backend", "min_seconds", "max_seconds", "shot_threshold", "min_face_size", "max_faces",
             "min_sync_confidence", "max_sync_offset", "min_quality", "val_fraction")
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    skip = tuple(s.strip() for item in args.skip for s in item.split(",") if s.strip())
    return PrepareSettings(**given, skip=skip)


def run_prepare(args: argparse.Namespace) -> None:
    from ..data.prepare import prepare_dataset

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    report = prepare_dataset(
        args.input_dir, args.output_dir, prepare_settings(args), engine=args.engine, workers=args.workers,
        ray_address=args.ray_address, checkpoint_dir=args.checkpoint_dir, offline=args.offline, device=args.device,
        progress=not args.quiet,
    )
    rejected = list(report.rejected_videos.items())
    for video, why in rejected[:SHOW_REJECTED]:
        print(f"rejected {video}: {why}")
    if len(rejected) > SHOW_REJECTED:
        print(f"... and {len(rejected) - SHOW_REJECTED} more videos rejected (see {args.output_dir}/manifest.sqlite)")
    print(report.summary())
    print(f"list: {report.fileslist}" + (f"; score histograms: {report.scores_png}" if report.scores_png else ""))
