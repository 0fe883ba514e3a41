"""CPU speed of whole lip-sync jobs with a mid-size model (the published structure at a quarter of its width, random
weights): seconds of compute per second of output with exact sampling, with step reuse 3, and with a prepared
avatar (exact, and with step reuse 3), measured one after the other in one run, as wall time and as CPU time of all
threads (steadier when other jobs share the machine); the ratios between them; the time to prepare the avatar; the
busy time of each stage.

    python scripts/bench_speed.py --out bench_speed.json [--seconds 1.28] [--steps 20] [--size mid]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from latentsync.audio import SAMPLE_RATE, load_audio, save_wav
from latentsync.face import detect_video_track
from latentsync.pipeline import LipSyncPipeline
from latentsync.pipeline.avatar import make_avatar
from latentsync.testing import write_random_models

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / "tests" / "data" / "media" / "demo1_360p.mp4"
SPEECH = ROOT / "tests" / "data" / "audio" / "demo2_speech.flac"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--seconds", type=float, default=1.28, help="output length (default: two 16-frame chunks)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", choices=["tiny", "mid", "full"], default="mid")
    ap.add_argument("--resolution", type=int, help="face resolution (default: 256, tiny 64)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=Path("bench_speed.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = write_random_models(tmp / "models", args.size, resolution=args.resolution)
        pipe = LipSyncPipeline.from_pretrained(
            "1.5", unet_config=models["unet_config"], unet_checkpoint=models["unet"], vae=models["vae"],
            whisper=models["whisper"], face_backend="mediapipe", offline=True, device=args.device,
        )
        speech = save_wav(tmp / "speech.wav", load_audio(SPEECH)[: int(args.seconds * SAMPLE_RATE)])
        common = dict(num_inference_steps=args.steps, seed=0, progress=False)
        pipe(args.video, speech, None, **{**common, "num_inference_steps": 1})  # warm-up: first-call costs

        runs, cpu, reports = {}, {}, {}

        def timed(name: str, video, **options) -> None:
            start, cpu_start = time.perf_counter(), time.process_time()
            result = pipe(video, speech, tmp / f"{name}.mp4", **common, **options)
            runs[name] = time.perf_counter() - start
            cpu[name] = time.process_time() - cpu_start  # all threads: steadier than wall time on a shared machine
            reports[name] = result.report

        timed("exact", args.video)
        timed("step_reuse_3", args.video, step_reuse=3)
        start = time.perf_counter()
        make_avatar(pipe, args.video, tmp / "talk.avatar", track=detect_video_track(args.video, pipe.detector()))
        avatar_seconds = time.perf_counter() - start
        timed("avatar", None, avatar=tmp / "talk.avatar")
        timed("avatar_step_reuse_3", None, avatar=tmp / "talk.avatar", step_reuse=3)

    output_seconds = reports["exact"].output_seconds
    per_second = {name: round(wall / output_seconds, 2) for name, wall in runs.items()}
    cpu_per_second = {name: round(spent / output_seconds, 2) for name, spent in cpu.items()}
    result = {
        "size": args.size, "resolution": pipe.resolution, "steps": args.steps, "device": args.device,
        "unet_parameters_millions": round(sum(p.numel() for p in pipe.unet.parameters()) / 1e6, 1),
        "output_seconds": output_seconds, "video": str(args.video),
        "seconds_per_output_second": per_second,
        "speedup_vs_exact": {name: round(per_second["exact"] / v, 2) for name, v in per_second.items()},
        "cpu_seconds_per_output_second": cpu_per_second,
        "cpu_speedup_vs_exact": {name: round(cpu_per_second["exact"] / v, 2) for name, v in cpu_per_second.items()},
        "avatar_prepare_seconds": round(avatar_seconds, 2),
        "stage_busy_seconds": {name: {k: round(v, 2) for k, v in r.busy.items()} for name, r in reports.items()},
        "step_seconds": {name: {k: round(v, 2) for k, v in r.seconds.items()} for name, r in reports.items()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'run':>22} {'s per output s':>15} {'x exact':>8} {'CPU s per output s':>19} {'x exact':>8}")
    for name, value in per_second.items():
        print(f"{name:>22} {value:15.2f} {result['speedup_vs_exact'][name]:8.2f} {cpu_per_second[name]:19.2f} "
              f"{result['cpu_speedup_vs_exact'][name]:8.2f}")
    print(f"avatar prepared in {avatar_seconds:.1f} s; written to {args.out}")


if __name__ == "__main__":
    main()
