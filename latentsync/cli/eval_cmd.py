"""`latentsync eval` (score lip-synced videos: Sync-C/D, FVD, FID, SSIM/PSNR, LPIPS) and `latentsync eval-syncnet`
(StableSyncNet accuracy on aligned clips)."""

from __future__ import annotations

import argparse
import json
import logging

from .. import weights

METRIC_HELP = "sync: Sync-C/Sync-D; fvd, fid: face-crop distributions; ssim: SSIM and PSNR (mouth, rest, frame); lpips"
# The evaluation modules' choices (api.METRICS, sync_metric.SYNC_FACES, fvd.RANGES / CLIP_MODES), repeated here
# so that building the parser imports no model code; a test keeps them equal.
METRICS = ("sync", "fvd", "fid", "ssim", "lpips")
SYNC_FACES = ("s3fd", "tracker")
FVD_RANGES = ("latentsync", "stylegan-v")
FVD_CLIP_MODES = ("published", "all")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score lip-synced videos (sync, FVD, FID, SSIM/PSNR, LPIPS); writes report.json/html")
    p.add_argument("generated", nargs="+", help="generated videos: files, folders, a .txt list, or a .csv of pairs "
                   "(columns generated,reference)")
    p.add_argument("--reference", nargs="+", help="source videos, matched to generated ones by file name")
    p.add_argument("--reference-dir", help="folder of source videos, matched by file name")
    p.add_argument("--output-dir", required=True, help="folder for report.json and report.html")
    p.add_argument("--metrics", default=",".join(METRICS), help=f"comma-separated, from {','.join(METRICS)} "
                   f"(default: all). {METRIC_HELP}")
    p.add_argument("--version", default=weights.DEFAULT_VERSION, choices=sorted(weights.VERSIONS),
                   help="release whose auxiliary/ weights to use (default: %(default)s)")
    p.add_argument("--checkpoint-dir", help="weights folder in the published checkpoints/ layout (default: caches)")
    p.add_argument("--offline", action="store_true", help="never download; missing weights fail with the fix")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--sync-faces", default="s3fd", choices=SYNC_FACES,
                   help="faces for Sync-C/D: the published S3FD tracker, or this project's tracker (default: %(default)s)")
    p.add_argument("--face-backend", default="auto", choices=["auto", "insightface", "mediapipe"],
                   help="face tracker for the source video (and --sync-faces tracker)")
    p.add_argument("--fvd-range", default="latentsync", choices=FVD_RANGES,
                   help="I3D input convention: LatentSync's published one or StyleGAN-V's (default: %(default)s)")
    p.add_argument("--fvd-clips", default="published", choices=FVD_CLIP_MODES,
                   help="one 16-frame clip per video (frames 20-35, published) or every 16 frames (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    p.set_defaults(run=run_eval)

    p = sub.add_parser("eval-syncnet", help="StableSyncNet accuracy on aligned clips (as eval_syncnet_acc)")
    p.add_argument("--config", required=True, help="SyncNet YAML (model: and data: sections)")
    p.add_argument("--checkpoint", required=True, help="StableSyncNet weights (stable_syncnet.pt or a training checkpoint)")
    p.add_argument("--fileslist", help="text file of aligned clips, one a line")
    p.add_argument("--data-dir", help="folder of aligned clips (.mp4)")
    p.add_argument("--num-samples", type=int, help="samples to score (default: data.num_val_samples of the config)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--output", help="also write the result as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_eval_syncnet)


def run_eval(args: argparse.Namespace) -> None:
    from ..evaluation.api import evaluate
    from ..evaluation.report import HTML_NAME, JSON_NAME

    if args.quiet:
        logging.getLogger("latentsync").setLevel(logging.WARNING)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    report = evaluate(
        args.generated, args.reference, reference_dir=args.reference_dir, metrics=metrics,
        output_dir=args.output_dir, progress=not args.quiet, checkpoint_dir=args.checkpoint_dir,
        offline=args.offline, device=args.device, sync_faces=args.sync_faces, face_backend=args.face_backend,
        fvd_range=args.fvd_range, fvd_clips=args.fvd_clips, version=args.version,
    )
    if not args.quiet:
        agg = {k: v for k, v in report["aggregate"].items() if v is not None}
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in agg.items()))
        for note in report["notes"] + [n for v in report["videos"] for n in v["notes"]]:
            print(f"note: {note}")
        timing = report["timing"]
        if timing["seconds_per_video_second"] is not None:
            print(f"{timing['seconds']:.1f} s for {timing['video_seconds']:.1f} s of video "
                  f"({timing['seconds_per_video_second']:.2f} s per second of video)")
        print(f"wrote {args.output_dir}/{JSON_NAME} and {HTML_NAME}")


def run_eval_syncnet(args: argparse.Namespace) -> None:
    from ..data import read_fileslist
    from ..evaluation.syncnet_acc import syncnet_accuracy
    from ..fileio import atomic_path
    from .infer import resolve_device

    device, _ = resolve_device(args.device, "float32")
    clips = read_fileslist(args.fileslist, args.data_dir, purpose="validation")
    result = syncnet_accuracy(args.config, args.checkpoint, clips, num_samples=args.num_samples,
                              batch_size=args.batch_size, seed=args.seed, device=device, progress=not args.quiet)
    print(f"SyncNet accuracy: {result.accuracy * 100:.2f}% ({result.correct}/{result.total}; in sync "
          f"{result.in_sync_accuracy * 100:.1f}%, off sync {result.off_sync_accuracy * 100:.1f}%)")
    if args.output:
        with atomic_path(args.output) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=1))
