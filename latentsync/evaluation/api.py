"""`evaluate(...)`: score lip-synced videos, alone (sync) or against their source videos (FVD, FID, SSIM/PSNR,
LPIPS); the command `latentsync eval` is a thin layer over it and writes the same numbers.

    report = evaluate(["out/talk.mp4"], reference=["talk.mp4"], metrics=("sync", "ssim"), offline=True)
    report["videos"][0]["metrics"]["sync_c"], report["aggregate"]

Everything that can be checked is checked before any model is loaded: the inputs are videos, every video that
needs a reference has one of the same frame size, generated videos carry audio for sync, and the weights of
every requested metric are present (offline: one error naming the files and the `latentsync download` command).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__, weights
from ..checkpoint import build_with_weights, load_state_dict
from ..errors import InputError
from ..face import FaceAligner, create_detector, detect_video_track, track_matrices
from ..media import FPS, frame_schedule, read_frames
from ..models.lpips import LPIPS, lpips_state
from . import fvd as fvd_mod
from .fid import inception_features
from .frames import MASK_RESOLUTION, RegionTally, mouth_regions
from .frechet import FeatureStats, frechet_distance
from .hashing import file_sha256
from .inception import load_inception
from .inputs import CheckedPair, VideoPair, check_pairs, collect_pairs
from .sync_metric import SYNC_FACES, load_sync_models, sync_metric

log = logging.getLogger(__name__)

METRICS = ("sync", "fvd", "fid", "ssim", "lpips")
REFERENCE_METRICS = ("fvd", "fid", "ssim", "lpips")
REPORT_FORMAT = "latentsync-eval"
CROP_SIZE = fvd_mod.CLIP_SIZE  # face crops for FID and FVD
LPIPS_RESOLUTION = MASK_RESOLUTION  # aligned faces compared by LPIPS (the aligner of the mouth regions)
BATCH = 8


@dataclass(frozen=True)
class EvalSettings:
    """How to evaluate; recorded in the report.

    `sync_faces`: "s3fd" (the published detector and tracker, on the generated video) or "tracker" (this
    project's face tracker, `face_backend`); `face_backend`: the detector that follows the face of the source
    video for the region metrics; `fvd_range` / `fvd_clips`: see `latentsync.evaluation.fvd`.
    """

    metrics: tuple[str, ...] = METRICS
    version: str = weights.DEFAULT_VERSION
    checkpoint_dir: str | None = None
    offline: bool = False
    device: str = "auto"
    sync_faces: str = "s3fd"
    face_backend: str = "auto"
    fvd_range: str = "latentsync"
    fvd_clips: str = "published"

    def __post_init__(self):
        if self.checkpoint_dir is not None:
            object.__setattr__(self, "checkpoint_dir", str(self.checkpoint_dir))
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown or not self.metrics:
            raise InputError(f"unknown metrics: {', '.join(unknown) or '(none given)'}", f"choose from {','.join(METRICS)}")
        if self.sync_faces not in SYNC_FACES:
            raise InputError(f"unknown face source for sync: {self.sync_faces!r}", f"choose one of {', '.join(SYNC_FACES)}")
        if self.fvd_range not in fvd_mod.RANGES:
            raise InputError(f"unknown FVD input range {self.fvd_range!r}", f"choose one of {', '.join(fvd_mod.RANGES)}")
        if self.fvd_clips not in fvd_mod.CLIP_MODES:
            raise InputError(f"unknown FVD clip mode {self.fvd_clips!r}", f"choose one of {', '.join(fvd_mod.CLIP_MODES)}")

    def components(self) -> list[str]:
        """Weight components the requested metrics need."""
        need = {"sync": ["syncnet_v2"] + (["s3fd"] if self.sync_faces == "s3fd" else []), "fvd": ["i3d"],
                "fid": ["inception"], "lpips": ["vgg16", "lpips"], "ssim": []}
        wanted = [c for m in self.metrics for c in need[m]]
        if self.face_backend == "insightface" and self.uses_tracker:
            wanted.append("face")
        return list(dict.fromkeys(wanted))

    @property
    def reference_metrics(self) -> list[str]:
        return [m for m in self.metrics if m in REFERENCE_METRICS]

    @property
    def uses_tracker(self) -> bool:
        return bool(self.reference_metrics) or ("sync" in self.metrics and self.sync_faces == "tracker")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"device {self.device} asked for, but no CUDA device is available", "use --device cpu")
        return torch.device(self.device)


@dataclass
class _Plan:
    """What the checks found: the pairs, the weight files, the device."""

    pairs: list[CheckedPair]
    paths: dict[str, Path]
    device: torch.device


def plan(pairs: Sequence[VideoPair], settings: EvalSettings) -> _Plan:
    """All checks that need no model: inputs, references, audio, weights (raises InputError/MissingWeightsError)."""
    device = settings.torch_device()
    checked = check_pairs(pairs, settings.reference_metrics, "sync" in settings.metrics)
    paths = weights.resolve(settings.components(), settings.version, settings.checkpoint_dir, settings.offline)
    return _Plan(checked, paths, device)


def load_lpips_files(vgg_path: Path, lin_path: Path, device: torch.device) -> LPIPS:
    """LPIPS-VGG whose stage widths are read from the VGG16 file (the published file gives the published sizes)."""
    vgg = load_state_dict(vgg_path)
    convs = sorted(int(k.split(".")[1]) for k in vgg if k.startswith("features.") and k.endswith(".weight"))
    if not convs:
        raise InputError(f"{vgg_path} holds no VGG16 `features.N.weight` tensors", "pass torchvision's vgg16-397923af.pth")
    stages: list[list[int]] = [[]]
    for prev, index in zip([None] + convs, convs):
        if prev is not None and index - prev > 2:  # a max-pool between: a new stage
            stages.append([])
        stages[-1].append(int(vgg[f"features.{index}.weight"].shape[0]))
    state = lpips_state(vgg, load_state_dict(lin_path))
    model = build_with_weights(lambda: LPIPS(stages), state, "LPIPS-VGG")
    return model.to(device).eval().requires_grad_(False)


@dataclass
class _Models:
    sync: Any = None
    i3d: Any = None
    inception: Any = None
    lpips: LPIPS | None = None
    detector: Any = None


def _load_models(p: _Plan, settings: EvalSettings) -> _Models:
    m = _Models()
    if "sync" in settings.metrics:
        m.sync = load_sync_models(p.paths, settings.sync_faces, p.device)
    if "fvd" in settings.metrics:
        m.i3d = fvd_mod.load_i3d(p.paths["i3d"], p.device)
    if "fid" in settings.metrics:
        m.inception = load_inception(p.paths["inception"], p.device)
    if "lpips" in settings.metrics:
        m.lpips = load_lpips_files(p.paths["vgg16"], p.paths["lpips"], p.device)
    if settings.uses_tracker:
        m.detector = create_detector(settings.face_backend, settings.checkpoint_dir, str(p.device), settings.offline,
                                     settings.version)
    return m


def face_box_crops(frames: np.ndarray, boxes: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """(N, size, size, 3) uint8: each frame's face box (x1, y1, x2, y2), clipped to the frame, resized with
    OpenCV's area interpolation (as LatentSync's FVD script crops its MediaPipe boxes; aspect not kept)."""
    h, w = frames.shape[1:3]
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, (frame, box) in enumerate(zip(frames, boxes)):
        x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
        x2, y2 = min(int(box[2]), w), min(int(box[3]), h)
        if x2 - x1 < 2 or y2 - y1 < 2:
            x1, y1, x2, y2 = 0, 0, w, h
        out[i] = cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)
    return out


def aligned_faces(frames: np.ndarray, mats: np.ndarray, aligner: FaceAligner) -> np.ndarray:
    """(N, R, R, 3) uint8 faces aligned by the track's matrices: the pipeline's crop, stretched to R x R in one
    bilinear warp (the pipeline resizes with Lanczos-4; for comparing two videos the same way this is enough)."""
    crop_w, crop_h = aligner.crop_size
    size = aligner.resolution
    stretch = np.diag([size / crop_w, size / crop_h])
    return np.stack([
        cv2.warpAffine(frame, stretch @ m, (size, size), flags=cv2.INTER_LINEAR, borderValue=(127, 127, 127))
        for frame, m in zip(frames, mats)
    ])


@dataclass
class _Features:
    """FID / FVD features of all videos, pooled for the aggregate."""

    fid: dict[str, list[np.ndarray]] = field(default_factory=lambda: {"generated": [], "reference": []})
    fvd: dict[str, list[np.ndarray]] = field(default_factory=lambda: {"generated": [], "reference": []})


def _paired_frames(gen_path: Path, ref_path: Path, schedule: np.ndarray):
    """Yield (indices, generated (B,H,W,3), reference (B,H,W,3)) in batches of BATCH frames."""
    ref_iter = read_frames(ref_path, indices=schedule)
    batch_i, batch_g, batch_r = [], [], []
    for (k, g), (_, r) in zip(read_frames(gen_path), ref_iter):
        batch_i.append(k)
        batch_g.append(g)
        batch_r.append(r)
        if len(batch_i) == BATCH:
            yield np.array(batch_i), np.stack(batch_g), np.stack(batch_r)
            batch_i, batch_g, batch_r = [], [], []
    if batch_i:
        yield np.array(batch_i), np.stack(batch_g), np.stack(batch_r)


@torch.no_grad()
def _compare_with_source(cp: CheckedPair, models: _Models, settings: EvalSettings, feats: _Features, progress: bool,
                         device: torch.device) -> tuple[dict, list[str]]:
    """Metrics against the reference video: region SSIM/PSNR, LPIPS, and FID/FVD features (pooled in `feats`)."""
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    n_gen = cp.generated.frames_at(FPS)
    n_ref = cp.reference.frames_at(FPS)
    schedule = frame_schedule(n_ref, n_gen)
    track = detect_video_track(cp.pair.reference, models.detector)
    if not track.present.any():
        notes.append(f"no face found in the reference {cp.pair.reference.name}: face metrics skipped")
    aligner = FaceAligner(MASK_RESOLUTION, device=device)
    mats = track_matrices(aligner, track)  # the pipeline's matrices, smoothing restarted after each absence
    present = track.present[schedule]
    clip_frames = set()
    starts = fvd_mod.clip_starts(present, settings.fvd_clips) if "fvd" in settings.metrics else []
    for s in starts:
        clip_frames.update(range(s, s + fvd_mod.CLIP_FRAMES))
    clip_crops: dict[str, dict[int, np.ndarray]] = {"generated": {}, "reference": {}}
    tally = RegionTally()
    lpips_values: list[float] = []
    fid_count = 0
    bar = tqdm(total=n_gen, desc=f"compare {cp.pair.generated.name}", unit="frame", disable=not progress, leave=False)
    for idx, gen, ref in _paired_frames(cp.pair.generated, cp.pair.reference, schedule):
        src = schedule[idx]
        here = track.present[src]
        if "ssim" in settings.metrics:
            mouth = np.zeros(gen.shape[:3], bool)
            if here.any():
                mouth[here] = mouth_regions(aligner, mats[src[here]], gen.shape[1], gen.shape[2])
            tally.add(gen, ref, mouth)
        if here.any() and "lpips" in settings.metrics:
            a = aligned_faces(gen[here], mats[src[here]], aligner)
            b = aligned_faces(ref[here], mats[src[here]], aligner)
            to_unit = lambda x: torch.from_numpy(x).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
            lpips_values.extend(models.lpips(to_unit(a), to_unit(b)).cpu().tolist())
        if here.any() and ("fid" in settings.metrics or clip_frames):
            boxes = track.boxes[src[here]]
            crops = {"generated": face_box_crops(gen[here], boxes), "reference": face_box_crops(ref[here], boxes)}
            if "fid" in settings.metrics:
                for side, c in crops.items():
                    feats.fid[side].append(inception_features(models.inception, c))
                fid_count += len(boxes)
            for j, k in enumerate(idx[here]):
                if int(k) in clip_frames:
                    for side, c in crops.items():
                        clip_crops[side][int(k)] = c[j]
        bar.update(len(idx))
    bar.close()
    if "ssim" in settings.metrics:
        metrics.update(tally.summary())
    if "lpips" in settings.metrics:
        metrics["lpips"] = float(np.mean(lpips_values)) if lpips_values else None
        metrics["lpips_frames"] = len(lpips_values)
    if "fid" in settings.metrics:
        metrics["fid_frames"] = fid_count
    if "fvd" in settings.metrics:
        for side in ("generated", "reference") if starts else ():
            clips = np.stack([[clip_crops[side][s + t] for t in range(fvd_mod.CLIP_FRAMES)] for s in starts])
            feats.fvd[side].append(fvd_mod.i3d_features(models.i3d, clips, settings.fvd_range))
        metrics["fvd_clips"] = len(starts)
        if not starts:
            notes.append(f"{cp.pair.generated.name}: no 16 consecutive frames with a face, no FVD clip")
    return metrics, notes


def _frechet(parts: dict[str, list[np.ndarray]], what: str, unit: str) -> tuple[float | None, int, str | None]:
    """(distance, samples per side, note) of pooled features; None with a note when there are too few."""
    gen = np.concatenate(parts["generated"]) if parts["generated"] else np.zeros((0, 1))
    ref = np.concatenate(parts["reference"]) if parts["reference"] else np.zeros((0, 1))
    if min(len(gen), len(ref)) < 2:
        return None, len(gen), f"{what} needs at least 2 {unit} per side, got {len(gen)}: evaluate more or longer videos"
    value = frechet_distance(FeatureStats.of(gen, what), FeatureStats.of(ref, what))
    note = None
    if len(gen) <= gen.shape[1]:
        note = (f"{what} from {len(gen)} {unit}, fewer than its {gen.shape[1]} feature dimensions: "
                "a rough figure; compare only with values from the same number of samples")
    return value, len(gen), note


def _mean(videos: list[dict], key: str) -> float | None:
    values = [v["metrics"][key] for v in videos if v["metrics"].get(key) is not None]
    return float(np.mean(values)) if values else None


def evaluate(
    generated: str | os.PathLike | Sequence[str | os.PathLike],
    reference: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    reference_dir: str | os.PathLike | None = None,
    metrics: Sequence[str] = METRICS,
    output_dir: str | os.PathLike | None = None,
    progress: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Evaluate lip-synced videos; returns the report (a JSON-ready dict: settings, weights with their SHA-256,
    per-video metrics and time series, aggregate). `options` are `EvalSettings` fields (checkpoint_dir,
    offline, device, sync_faces, face_backend, fvd_range, fvd_clips, version). With `output_dir`, also
    writes report.json and report.html there (the folder is checked first)."""
    from .report import check_output_dir, json_ready, write_reports

    settings = EvalSettings(metrics=tuple(dict.fromkeys(metrics)), **options)
    if output_dir is not None:
        check_output_dir(output_dir)
    pairs = collect_pairs(generated, reference, reference_dir)
    p = plan(pairs, settings)
    started = time.perf_counter()
    hashes = {c: {"path": str(path), "sha256": file_sha256(path)} for c, path in sorted(p.paths.items())}
    models = _load_models(p, settings)
    loaded = time.perf_counter()
    feats = _Features()
    videos = []
    for cp in tqdm(p.pairs, desc="evaluate", unit="video", disable=not progress or len(p.pairs) < 2):
        entry: dict[str, Any] = {
            "generated": str(cp.pair.generated),
            "reference": str(cp.pair.reference) if cp.pair.reference else None,
            "frames": cp.generated.frames_at(FPS),
            "seconds": cp.generated.frames_at(FPS) / FPS,
            "metrics": {}, "series": {}, "notes": [],
        }
        if "sync" in settings.metrics:
            values, series, notes = sync_metric(cp.pair.generated, models.sync, settings.sync_faces, models.detector)
            entry["metrics"].update(values)
            entry["series"].update(series)
            entry["notes"].extend(notes)
        if settings.reference_metrics:
            values, notes = _compare_with_source(cp, models, settings, feats, progress, p.device)
            entry["metrics"].update(values)
            entry["notes"].extend(notes)
        videos.append(entry)
    aggregate: dict[str, Any] = {"videos": len(videos)}
    notes: list[str] = []
    for key in ("sync_c", "sync_d", "offset", "ssim_mouth", "ssim_rest", "ssim_frame", "psnr_mouth", "psnr_rest",
                "psnr_frame", "lpips"):
        if any(key in v["metrics"] for v in videos):
            aggregate[key] = _mean(videos, key)
    for name, parts, unit in (("fid", feats.fid, "frames"), ("fvd", feats.fvd, "clips")):
        if name in settings.metrics:
            aggregate[name], aggregate[f"{name}_samples"], note = _frechet(parts, name.upper(), unit)
            if note:
                notes.append(note)
    seconds = sum(v["seconds"] for v in videos)
    elapsed = time.perf_counter() - loaded
    report = {
        "format": REPORT_FORMAT,
        "latentsync": __version__,
        "settings": {**asdict(settings), "metrics": list(settings.metrics), "device": str(p.device),
                     "face_detector": getattr(models.detector, "name", None), "mask_resolution": MASK_RESOLUTION,
                     "lpips_face_resolution": LPIPS_RESOLUTION, "crop_size": CROP_SIZE},
        "weights": hashes,
        "videos": videos,
        "aggregate": aggregate,
        "notes": notes,
        "timing": {"load_seconds": loaded - started, "seconds": elapsed, "video_seconds": seconds,
                   "seconds_per_video_second": elapsed / seconds if seconds else None},
    }
    report = json_ready(report)
    if output_dir is not None:
        write_reports(report, output_dir)
    return report
