"""Speed and memory of the whole lip-sync job: seconds of compute per second of output, time per stage,
peak RSS and (on CUDA) peak VRAM, printed and written to JSON.

Random weights in the published formats stand in for the real ones, so this runs anywhere: `--size full` has the
published sizes (1.27 B-parameter U-Net, Whisper tiny, sd-vae-ft-mse; measure it on a GPU), `--size tiny` runs on
a CPU in seconds per chunk. `--seconds N` first builds an N-second input at the clip's resolution (video looped
forward and backward, speech tracks repeated), e.g. to compare peak memory of a 20 s and a 3 min job:

    python scripts/bench_pipeline.py --video tests/data/media/demo1_1080p.mp4 --seconds 20 --out bench_20s.json
    python scripts/bench_pipeline.py --video tests/data/media/demo1_1080p.mp4 --seconds 180 --out bench_180s.json
    python scripts/bench_pipeline.py --size full --resolution 512 --device cuda --dtype float16 --out full512.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from latentsync.audio import SAMPLE_RATE, load_audio, save_wav
from latentsync.media import VideoWriter, frame_schedule, read_frames
from latentsync.pipeline import LipSyncPipeline
from latentsync.testing import write_random_models

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT / "tests" / "data" / "media" / "demo1_360p.mp4"
DEFAULT_AUDIO = ROOT / "tests" / "data" / "audio" / "demo2_speech.flac"


def build_input(video: Path, audio: Path, seconds: float, folder: Path) -> tuple[Path, Path]:
    """An N-second video (the clip played forward and backward) and an N-second speech track (repeated)."""
    frames = [frame for _, frame in read_frames(video)]
    count = int(seconds * 25)
    speech = load_audio(audio)
    speech = np.resize(speech, int(seconds * SAMPLE_RATE))  # repeats the track
    out_video = folder / f"input_{int(seconds)}s.mp4"
    height, width = frames[0].shape[:2]
    with VideoWriter(out_video, width, height, audio=speech, preset="ultrafast", crf=23) as writer:
        for start in range(0, count, 25):
            writer.write(np.stack([frames[i] for i in frame_schedule(len(frames), count)[start : start + 25]]))
    return out_video, save_wav(folder / f"speech_{int(seconds)}s.wav", speech)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class RssSampler(threading.Thread):
    """The process's resident size every `interval` seconds while the job runs (peak RSS alone cannot show that
    memory stays flat: it also holds the input building and model loading)."""

    def __init__(self, interval: float = 1.0):
        super().__init__(daemon=True)
        self.interval, self.samples, self._done = interval, [], threading.Event()

    def run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._done.wait(self.interval):
            with open("/proc/self/statm") as statm:
                self.samples.append(int(statm.read().split()[1]) * page / 2**20)

    def stop(self) -> list[float]:
        self._done.set()
        self.join()
        return self.samples


def cpu_usage() -> dict[str, float]:
    """Process totals so far: user and system CPU seconds, and minor page faults (pages first touched)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"user_seconds": usage.ru_utime, "system_seconds": usage.ru_stime, "minor_page_faults": usage.ru_minflt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    ap.add_argument("--seconds", type=float, help="build an input of this length from --video/--audio first")
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--resolution", type=int, help="face resolution (default: 64 tiny, 256 full)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--face-backend", default="mediapipe")
    ap.add_argument("--out", type=Path, default=Path("bench_pipeline.json"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video, audio = args.video, args.audio
        if args.seconds:
            video, audio = build_input(video, audio, args.seconds, tmp)
        models = write_random_models(tmp / "models", args.size, resolution=args.resolution)
        rss_before_models = peak_rss_mib()
        start = time.perf_counter()
        pipe = LipSyncPipeline.from_pretrained(
            "1.5", unet_config=models["unet_config"], unet_checkpoint=models["unet"], vae=models["vae"],
            whisper=models["whisper"], face_backend=args.face_backend, offline=True,
            device=args.device, dtype=getattr(torch, args.dtype),
        )
        load_seconds = time.perf_counter() - start
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        usage_before = cpu_usage()
        sampler = RssSampler()
        sampler.start()
        start = time.perf_counter()
        report = pipe(video, audio, tmp / "out.mp4", num_inference_steps=args.steps, seed=0).report
        wall = time.perf_counter() - start
        rss = sampler.stop()
        usage = {k: round(v - usage_before[k], 2) for k, v in cpu_usage().items()}

    result = {
        "size": args.size,
        "resolution": pipe.resolution,
        "steps": args.steps,
        "device": str(pipe.device),
        "dtype": args.dtype,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "input": {"video": str(args.video), "seconds": args.seconds or report.video_frames / 25},
        "output_seconds": report.output_seconds,
        "output_frames": report.output_frames,
        "model_load_seconds": round(load_seconds, 2),
        "wall_seconds": round(wall, 2),
        "seconds_per_output_second": round(wall / report.output_seconds, 3),
        "job_cpu": usage,  # the lip-sync job alone (not building the input or loading models)
        "system_time_share": round(usage["system_seconds"] / wall, 3),
        "phase_seconds": {k: round(v, 2) for k, v in report.seconds.items()},
        "stage_busy_seconds": {k: round(v, 2) for k, v in report.busy.items()},
        "peak_rss_mib_before_models": round(rss_before_models, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        # Sampled each second of the job: its largest value, and the largest in each fifth of the job (flat memory
        # shows as five similar numbers, however long the video).
        "job_rss_mib_max": round(max(rss), 1) if rss else None,
        "job_rss_mib_max_by_fifth": [round(max(part), 1) for part in np.array_split(np.array(rss), 5) if len(part)],
        "peak_vram_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
    }
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
