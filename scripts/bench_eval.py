"""Seconds of evaluation per second of video, per metric, with random weights at the published sizes.

    python scripts/bench_eval.py --out bench_eval.json                       # CPU, the 6 s demo clip
    python scripts/bench_eval.py --device cuda --out bench_eval_gpu.json
    python scripts/bench_eval.py --generated out.mp4 --reference talk.mp4   # your own pair

SyncNet v2, S3FD, the FID Inception-v3 and LPIPS-VGG have their published sizes, so their timings are
representative. The I3D file is a small stand-in with the published call signature (the real one is TorchScript
and carries its own architecture): the FVD row measures cropping and clip assembly, not the real I3D.
Without --generated the demo clip is scored against itself (the work per frame does not depend on the content).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latentsync.evaluation.api import METRICS, evaluate
from latentsync.testing.eval_models import write_random_eval_models
from latentsync.testing.metric_models import (
    write_random_i3d,
    write_random_inception,
    write_random_lpips,
)

DEMO = ROOT / "tests" / "data" / "media" / "demo1_6s.mp4"


def write_weights(folder: Path) -> None:
    aux = folder / "auxiliary"
    write_random_eval_models(folder, components=("syncnet_v2", "s3fd"))
    write_random_i3d(aux / "i3d_torchscript.pt")
    write_random_inception(aux / "pt_inception-2015-12-05-6726825d.pth")
    write_random_lpips(aux / "vgg16-397923af.pth", aux / "lpips_vgg_v0.1.pth")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generated", default=str(DEMO))
    parser.add_argument("--reference", default=None, help="default: the generated video itself")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sync-faces", default="s3fd", choices=["s3fd", "tracker"])
    parser.add_argument("--face-backend", default="mediapipe")
    parser.add_argument("--metrics", default=",".join(METRICS), help="one row each; `all` runs them together")
    parser.add_argument("--out", help="write the figures as JSON")
    args = parser.parse_args()

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_weights(Path(tmp))
        for metric in [m for m in args.metrics.split(",") if m]:
            chosen = METRICS if metric == "all" else (metric,)
            started = time.perf_counter()
            report = evaluate(args.generated, args.reference or args.generated, metrics=chosen, checkpoint_dir=tmp,
                              offline=True, device=args.device, sync_faces=args.sync_faces,
                              face_backend=args.face_backend, fvd_clips="all")
            timing = report["timing"]
            rows[metric] = {"seconds_per_video_second": timing["seconds_per_video_second"],
                            "load_seconds": timing["load_seconds"], "total_seconds": time.perf_counter() - started}
            print(f"{metric:>6}: {timing['seconds_per_video_second']:.2f} s per second of video "
                  f"(models loaded in {timing['load_seconds']:.1f} s)", flush=True)
            for note in [n for v in report["videos"] for n in v["notes"]] + report["notes"]:
                print(f"        note: {note}")
    result = {"video": args.generated, "video_seconds": report["timing"]["video_seconds"], "device": args.device,
              "sync_faces": args.sync_faces, "threads": torch.get_num_threads(), "machine": platform.platform(),
              "metrics": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
