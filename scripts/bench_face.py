"""Frames per second of the face stages on the 1080p fixtures: detection (MediaPipe; InsightFace with random
ONNX weights of roughly det_10g's compute, since the real weights cannot be downloaded here), alignment
(FaceAligner.warp) and paste-back (FaceAligner.paste), each beside the published method measured in the same run
on the same frames (`published_align`: the whole frame as float32 through an affine grid_sample with a warped
ones-image for the grey fill, then OpenCV Lanczos-4; `published_paste`: the face warped back over the whole frame,
its mask eroded and blurred with OpenCV over the whole frame, blended in float).

    python scripts/bench_face.py --out bench_face.json [--resolution 256] [--device cpu] [--no-detection]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]

from latentsync.face import FaceAligner, create_detector, track_faces
from latentsync.media import read_frames
from latentsync.face.detectors.insightface import InsightFaceDetector
from latentsync.testing.face_onnx import random_landmarks, random_scrfd

VIDEOS = [ROOT / "tests" / "data" / "media" / f"demo{i}_1080p.mp4" for i in (1, 2, 3)]


CPU_SECONDS: dict[str, float] = {}  # CPU time (all threads) of each timed stage: steadier than wall time when the
# machine is shared


def seconds(fn, stage: str | None = None) -> float:
    """Wall time of fn(); its CPU time is added to CPU_SECONDS[stage]."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    if stage:
        CPU_SECONDS[stage] = CPU_SECONDS.get(stage, 0.0) + time.process_time() - cpu
    return time.perf_counter() - start


def _whole_frame_warp(image: torch.Tensor, mat: np.ndarray, out_hw: tuple[int, int], fill: float) -> torch.Tensor:
    """The published warp: (1, C, H, W) float32 through an affine grid over the whole image, `fill` blended in where
    the output lies outside it (found by warping an all-ones image the same way)."""
    height, width = image.shape[-2:]
    to_unit = lambda h, w: torch.tensor([[2 / (w - 1), 0, -1], [0, 2 / (h - 1), -1], [0, 0, 1]])  # noqa: E731
    full = torch.cat([torch.from_numpy(mat).float(), torch.tensor([[0.0, 0.0, 1.0]])])
    theta = torch.linalg.inv(to_unit(*out_hw) @ full @ torch.linalg.inv(to_unit(height, width)))[None, :2]
    grid = F.affine_grid(theta, [1, 1, *out_hw], align_corners=True)
    warped = F.grid_sample(image, grid, align_corners=True)
    coverage = F.grid_sample(torch.ones(1, 1, height, width), grid, align_corners=True)
    return warped + (1 - coverage) * fill, coverage


def published_align(frame: np.ndarray, mat: np.ndarray, crop_wh: tuple[int, int], size: int) -> np.ndarray:
    """One frame aligned the published way (whole frame to float32, warp, OpenCV resize)."""
    image = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    crop, _ = _whole_frame_warp(image, mat, crop_wh[::-1], 127.0)
    crop = crop[0].clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_LANCZOS4)


def published_paste(frame: np.ndarray, face: np.ndarray, mat: np.ndarray, crop_wh: tuple[int, int]) -> np.ndarray:
    """One face pasted back the published way: warped over the whole frame, mask eroded and blurred over it."""
    height, width = frame.shape[:2]
    inverse = cv2.invertAffineTransform(mat)
    unit = torch.from_numpy(face).permute(2, 0, 1)[None].float() / 127.5 - 1
    unit = F.interpolate(unit, size=crop_wh[::-1], mode="bicubic", antialias=True)
    back, coverage = _whole_frame_warp(unit, inverse, (height, width), 127.0)
    back = ((back[0] / 2 + 0.5).clamp(0, 1) * 255).permute(1, 2, 0).numpy()
    mask = coverage[0, 0].numpy()
    mask = cv2.erode(mask, np.ones((2, 2), np.uint8))
    edge = int(np.sqrt(mask.sum())) // 20
    centre = cv2.erode(mask, np.ones((2 * edge, 2 * edge), np.uint8))
    alpha = cv2.GaussianBlur(centre, (2 * edge + 1, 2 * edge + 1), 0.3 * ((2 * edge) * 0.5 - 1) + 0.8)[..., None]
    return (alpha * (mask[..., None] * back) + (1 - alpha) * frame).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_face.json"))
    parser.add_argument("--resolution", type=int, default=256, help="aligned face size R")
    parser.add_argument("--device", default="cpu", help="device for FaceAligner and onnxruntime")
    parser.add_argument("--batch", type=int, default=16, help="frames per FaceAligner call")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-detection", action="store_true", help="time alignment and paste-back only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

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
    totals = {"frames": 0, "align": 0.0, "published_align": 0.0, "paste": 0.0, "published_paste": 0.0}
    if not args.no_detection:
        totals.update(mediapipe=0.0, insightface_random=0.0)
    crop_wh = aligner.crop_size

    for path in VIDEOS:
        frames = np.stack([frame for _, frame in read_frames(path)])
        n = len(frames)
        totals["frames"] += n
        track = None

        def run_mediapipe():
            nonlocal track
            track = track_faces(iter(frames), mediapipe)

        if args.no_detection:
            run_mediapipe()
        else:
            totals["mediapipe"] += seconds(run_mediapipe)
            totals["insightface_random"] += seconds(lambda: [insight.detect(f) for f in frames])
        mats = aligner.matrices(track.points)
        faces = []

        def align():
            for s in range(0, n, args.batch):
                faces.append(aligner.warp(frames[s : s + args.batch], mats[s : s + args.batch]))

        totals["align"] += seconds(align, "align")
        totals["published_align"] += seconds(
            lambda: [published_align(f, m, crop_wh, args.resolution) for f, m in zip(frames, mats)], "published_align"
        )
        faces_all = np.concatenate(faces)

        def paste():
            for s in range(0, n, args.batch):
                aligner.paste(frames[s : s + args.batch], faces_all[s : s + args.batch], mats[s : s + args.batch])

        totals["paste"] += seconds(paste, "paste")
        totals["published_paste"] += seconds(
            lambda: [published_paste(f, face, m, crop_wh) for f, face, m in zip(frames, faces_all, mats)],
            "published_paste",
        )

    count = totals.pop("frames")
    fps = {stage: round(count / spent, 2) for stage, spent in totals.items()}
    ms = {stage: round(spent / count * 1000, 2) for stage, spent in totals.items()}
    report = {
        "frames": count,
        "frame_size": "1080x1920 (width x height)",
        "resolution": args.resolution,
        "device": args.device,
        "batch": args.batch,
        "fps": fps,
        "ms_per_frame": ms,
        "cpu_ms_per_frame": {stage: round(spent / count * 1000, 2) for stage, spent in CPU_SECONDS.items()},
        "speedup_vs_published": {s: round(ms[f"published_{s}"] / ms[s], 2) for s in ("align", "paste")},
        "notes": "insightface: random SCRFD weights of about det_10g's compute, no face found (no real weights here)",
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "processor": platform.processor() or platform.machine()},
    }
    args.out.write_text(json.dumps(report, indent=2))
    for stage, value in fps.items():
        cpu = f" ({CPU_SECONDS[stage] / count * 1000:.2f} ms CPU)" if stage in CPU_SECONDS else ""
        print(f"{stage:>30}: {value:8.2f} fps {ms[stage]:8.2f} ms/frame{cpu}")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
