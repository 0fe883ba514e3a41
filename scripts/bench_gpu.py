"""The GPU benchmark in one command: seconds of compute per second of output for LatentSync at full model size
(random weights in the published formats, float16), at 256 and 512 px, with exact sampling and with step reuse 3,
each with and without a prepared avatar, and the peak GPU memory of each run, on a 20 s 1080p clip (built from the
bundled 1 s demo clip played forward and backward) with 20 s of speech.

Needs only Python, a CUDA build of torch and this package's other dependencies (no weights, no network):

    python scripts/bench_gpu.py --out bench_gpu.json                      # about 6 minutes on one H100/H200

Results are written after every run, so a run cut short keeps what it measured; `--max-minutes` stops starting
new runs when the next one would not finish in time. On a CPU it can be smoke-tested with tiny models:

    python scripts/bench_gpu.py --device cpu --size tiny --resolutions 64 --seconds 1 --steps 2 --out smoke.json
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import build_input  # noqa: E402 - the N-second 1080p input, as the pipeline benchmark builds it

from latentsync.face import detect_video_track  # noqa: E402
from latentsync.pipeline import LipSyncPipeline  # noqa: E402
from latentsync.pipeline.avatar import make_avatar  # noqa: E402
from latentsync.testing import write_random_models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VIDEO = ROOT / "tests" / "data" / "media" / "demo1_1080p.mp4"
SPEECH = ROOT / "tests" / "data" / "audio" / "demo2_speech.flac"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the input clip and of the speech")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--size", choices=["tiny", "mid", "full"], default="full")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--vae-slice", type=int, default=4, help="frames decoded at once")
    ap.add_argument("--batch-chunks", type=int, default=1, help="16-frame chunks per U-Net call")
    ap.add_argument("--compile", action="store_true", help="also torch.compile the U-Net and VAE decoder")
    ap.add_argument("--max-minutes", type=float, default=7.5, help="start no run that would end after this")
    args = ap.parse_args()
    began = time.perf_counter()
    cuda = args.device.startswith("cuda")
    result = {
        "gpu": torch.cuda.get_device_name(args.device) if cuda else None, "torch": torch.__version__,
        "platform": platform.platform(), "size": args.size, "dtype": args.dtype, "steps": args.steps,
        "clip": f"{args.seconds:g} s, 1080x1920, built from {VIDEO.name}", "vae_slice": args.vae_slice,
        "compile": args.compile, "batch_chunks": args.batch_chunks, "runs": {},
    }

    def save() -> None:
        result["total_seconds"] = round(time.perf_counter() - began, 1)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        video, speech = build_input(VIDEO, SPEECH, args.seconds, tmp)
        models = write_random_models(tmp / "models", args.size)
        base = LipSyncPipeline.from_pretrained(
            "1.5", unet_config=models["unet_config"], unet_checkpoint=models["unet"], vae=models["vae"],
            whisper=models["whisper"], face_backend="mediapipe", offline=True, device=args.device,
            dtype=getattr(torch, args.dtype),
        )
        result["setup_seconds"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        track = detect_video_track(video, base.detector())
        result["face_detection_seconds"] = round(time.perf_counter() - start, 1)
        save()

        longest = 0.0
        for resolution in args.resolutions:
            pipe = LipSyncPipeline(unet=base.unet, vae=base.vae, scheduler=base.scheduler, resolution=resolution,
                                   audio_encoder=base.audio_encoder, face_detector=base.face_detector)
            options = dict(num_inference_steps=args.steps, seed=0, progress=False, vae_slice=args.vae_slice,
                           compile=args.compile, batch_chunks=args.batch_chunks)
            # Warm-up (CUDA kernels, cuDNN choices, compilation) on one chunk, not timed.
            pipe(video, speech if args.seconds <= 0.64 else _short(speech, tmp), None, track=track,
                 **{**options, "num_inference_steps": 2})
            avatar = tmp / f"talk_{resolution}.avatar"
            plan = [("exact", dict(track=track)), ("step_reuse_3", dict(track=track, step_reuse=3)),
                    ("avatar_prepare", None), ("avatar", dict(avatar=avatar)),
                    ("avatar_step_reuse_3", dict(avatar=avatar, step_reuse=3))]
            for name, extra in plan:
                elapsed = (time.perf_counter() - began) / 60
                if elapsed + longest / 60 > args.max_minutes:
                    result["runs"][f"{resolution}/{name}"] = "skipped: over --max-minutes"
                    save()
                    continue
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                if extra is None:
                    make_avatar(pipe, video, avatar, track=track)
                    output_seconds = None
                else:
                    report = pipe(video if "avatar" not in extra else None, speech, tmp / "out.mp4", **options,
                                  **extra).report
                    output_seconds = report.output_seconds
                if cuda:
                    torch.cuda.synchronize()
                wall = time.perf_counter() - start
                longest = max(longest, wall)
                entry = {"wall_seconds": round(wall, 2)}
                if output_seconds:
                    entry["seconds_per_output_second"] = round(wall / output_seconds, 3)
                    entry["stage_busy_seconds"] = {k: round(v, 2) for k, v in report.busy.items()}
                if cuda:
                    entry["peak_vram_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                result["runs"][f"{resolution}/{name}"] = entry
                save()
    _print_table(result)
    save()
    print(f"written to {args.out}")


def _short(speech: Path, folder: Path) -> Path:
    """The first 0.64 s (one chunk) of the speech, for warming up."""
    from latentsync.audio import SAMPLE_RATE, load_audio, save_wav

    return save_wav(folder / "warmup.wav", load_audio(speech)[: int(0.64 * SAMPLE_RATE)])


def _print_table(result: dict) -> None:
    print(f"{'run':>28} {'s / output s':>13} {'wall s':>8} {'peak VRAM GiB':>14}")
    for name, entry in result["runs"].items():
        if isinstance(entry, str):
            print(f"{name:>28} {entry}")
            continue
        per = entry.get("seconds_per_output_second")
        print(f"{name:>28} {per if per is not None else '-':>13} {entry['wall_seconds']:>8} "
              f"{entry.get('peak_vram_gib', '-'):>14}")
    print(f"face detection of the clip (once, CPU): {result['face_detection_seconds']} s")


if __name__ == "__main__":
    main()
