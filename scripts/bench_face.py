"""Frames per second of the face stages on the 1080p fixtures: detection (MediaPipe; InsightFace with random
ONNX weights of roughly det_10g's compute, since the real weights cannot be downloaded here), alignment
(FaceAligner.warp) and paste-back (FaceAligner.paste).

    python scripts/bench_face.py --out bench_face.json [--resolution 256] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

from latentsync.face import FaceAligner, create_detector, track_faces
from latentsync.media import read_frames
from latentsync.face.detectors.insightface import InsightFaceDetector
from latentsync.testing.face_onnx import random_landmarks, random_scrfd

VIDEOS = [ROOT / "tests" / "data" / "media" / f"demo{i}_1080p.mp4" for i in (1, 2, 3)]


def seconds(fn) -> float:
    """Wall time of fn()."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_face.json"))
    parser.add_argument("--resolution", type=int, default=256, help="aligned face size R")
    parser.add_argument("--device", default="cpu", help="device for FaceAligner and onnxruntime")
    parser.add_argument("--batch", type=int, default=16, help="frames per FaceAligner call")
    args = parser.parse_args()

    mediapipe = create_detector("mediapipe")
    with tempfile.TemporaryDirectory() as tmp:
        # ~8 GFLOPs per 512 x 512 detection, about det_10g's; no face passes the score threshold, so
        # this times SCRFD and its decoding only (2d106det, a small MobileNet, runs once per face on top).
        insight = InsightFaceDetector(
            random_scrfd(Path(tmp, "det.onnx"), channels=128, depth=1, score_bias=-20.0),
            random_landmarks(Path(tmp, "lmk.onnx")),
            device=args.device,
        )
    aligner = FaceAligner(args.resolution, device=args.device)
    totals = {"frames": 0, "mediapipe": 0.0, "insightface_random": 0.0, "align": 0.0, "paste": 0.0}

    for path in VIDEOS:
        frames = np.stack([frame for _, frame in read_frames(path)])
        n = len(frames)
        totals["frames"] += n
        track = None

        def run_mediapipe():
            nonlocal track
            track = track_faces(iter(frames), mediapipe)

        totals["mediapipe"] += seconds(run_mediapipe)
        totals["insightface_random"] += seconds(lambda: [insight.detect(f) for f in frames])
        mats = aligner.matrices(track.points)
        faces = []

        def align():
            for s in range(0, n, args.batch):
                faces.append(aligner.warp(frames[s : s + args.batch], mats[s : s + args.batch]))

        totals["align"] += seconds(align)
        faces_all = np.concatenate(faces)

        def paste():
            for s in range(0, n, args.batch):
                aligner.paste(frames[s : s + args.batch], faces_all[s : s + args.batch], mats[s : s + args.batch])

        totals["paste"] += seconds(paste)

    count = totals.pop("frames")
    fps = {stage: round(count / spent, 2) for stage, spent in totals.items()}
    report = {
        "frames": count,
        "frame_size": "1080x1920 (width x height)",
        "resolution": args.resolution,
        "device": args.device,
        "batch": args.batch,
        "fps": fps,
        "notes": "insightface: random SCRFD weights of about det_10g's compute, no face found (no real weights here)",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "processor": platform.processor() or platform.machine()},
    }
    args.out.write_text(json.dumps(report, indent=2))
    for stage, value in fps.items():
        print(f"{stage:>30}: {value:8.2f} fps")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
