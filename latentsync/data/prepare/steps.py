"""The steps of the data pipeline (SPEC 11) as functions of one task, run in worker processes or Ray tasks.

Video steps: `read` (drop unreadable videos, hash the content), `resample` (25 fps / 16 kHz, done while decoding;
switched off, videos not already at those rates are rejected), `shots` (PySceneDetect), `faces` (follow the
largest face, saved as a face track), `segments` (5-10 s stretches within one shot with the face visible).
Clip steps: `face_filter` (face size and count), `align` (R x R faces with their speech), `sync` (SyncNet offset and
confidence), `quality` (HyperIQA), `publish` (the kept clip, its audio shifted by the offset).

A step returns its result as a JSON-able dict or raises `Rejected` (the input is unusable: a logged rejection,
never a crash). Thresholds are not applied here: the runner decides from the scores, so that changing a threshold
needs no step to run again. Models and detectors are loaded once per worker process.
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np

from ...audio import load_audio
from ...errors import LatentSyncError
from ...face import FaceAligner, FaceTrack, create_detector, detect_video_track, load_video_track
from ...media import FPS, probe_video, read_frames
from .clipfiles import SAMPLES_PER_FRAME, clip_audio, publish_clip, write_aligned_clip
from .filters import QualityFilter, SyncFilter
from .segments import detect_shots, segment_spans, shot_spans
from .settings import PrepareSettings

log = logging.getLogger(__name__)

VIDEO_STEPS = ("read", "resample", "shots", "faces", "segments")
CLIP_STEPS = ("face_filter", "align", "sync", "quality", "publish")
MODEL_STEPS = ("sync", "quality")  # run where the models are (the GPU when there is one)
WORK_DIR = "work"  # face tracks and aligned clips (all segments, kept or not)
CLIPS_DIR = "clips"  # the kept clips, listed in fileslist.txt


class Rejected(Exception):
    """The item is unusable for this step: `reason` is a short category (summed up in the summary), `detail` says
    exactly what was found."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Context:
    """What every task needs besides its own inputs (picklable, sent with each task)."""

    input_dir: str
    output_dir: str
    settings: PrepareSettings
    face_backend: str  # resolved: "insightface" or "mediapipe"
    checkpoint_dir: str | None = None
    offline: bool = False
    device: str = "cpu"  # face detection and alignment
    model_device: str = "cpu"  # SyncNet, S3FD, HyperIQA
    weights: dict[str, str] = field(default_factory=dict)  # component -> file


@dataclass(frozen=True)
class Task:
    step: str
    item: str  # the video (path relative to the input folder) or the clip id
    video: str
    inputs: dict[str, Any]  # what earlier steps found, as the step needs it, and `tag`: the start of the step's key


@dataclass(frozen=True)
class Outcome:
    status: str  # "done", "rejected" or "error" (a bug or a crash: retried by the next run)
    result: dict | None = None
    reason: str | None = None
    detail: str | None = None
    seconds: float = 0.0  # wall time the step took in the worker (benchmarks; not recorded in the manifest)
    cpu_seconds: float = 0.0  # CPU time of the worker process (all its threads) during the step


def clip_id(video: str, start: int, end: int) -> str:
    return f"{video}#{start:06d}-{end - 1:06d}"


def clip_stem(video: str, start: int, end: int) -> str:
    """Where a clip's files go, relative to a step folder: `<video path without suffix>/<first>-<last frame>`."""
    return f"{Path(video).with_suffix('').as_posix()}/{start:06d}-{end - 1:06d}"


def run_task(ctx: Context, task: Task) -> Outcome:
    """Run one step of one item; never raises."""
    started, cpu = time.perf_counter(), time.process_time()
    outcome = _outcome(ctx, task)
    return replace(outcome, seconds=time.perf_counter() - started, cpu_seconds=time.process_time() - cpu)


def _outcome(ctx: Context, task: Task) -> Outcome:
    try:
        return Outcome("done", STEP_FUNCTIONS[task.step](ctx, task))
    except Rejected as exc:
        return Outcome("rejected", None, exc.reason, exc.detail)
    except LatentSyncError as exc:  # a damaged or unusable input
        return Outcome("rejected", None, "unreadable" if task.step == "read" else "unusable", exc.message)
    except av.FFmpegError as exc:  # a damaged file may fail only while decoding
        return Outcome("rejected", None, "decoding failed", str(exc))
    except Exception as exc:  # noqa: BLE001 - any other failure is recorded, logged, and retried next run
        log.warning("%s failed on %s:\n%s", task.step, task.item, traceback.format_exc())
        return Outcome("error", None, "error", f"{type(exc).__name__}: {exc}")


def run_worker_task(ctx: Context, task: Task) -> Outcome:
    """`run_task` in a worker process (pool or Ray): workers run side by side, one thread each."""
    _one_thread()
    return run_task(ctx, task)


def _one_thread() -> None:
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _source(ctx: Context, task: Task) -> Path:
    return Path(ctx.input_dir) / task.video


def _work(ctx: Context, *parts: str) -> Path:
    return Path(ctx.output_dir, WORK_DIR, *parts)


# video steps
def read_step(ctx: Context, task: Task) -> dict:
    path = _source(ctx, task)
    info = probe_video(path)
    if info.truncated:
        raise Rejected("truncated", f"only {info.num_frames} of the {info.listed_frames} frames its index lists decode")
    if not info.has_audio:
        raise Rejected("no audio", "training needs the speaker's own speech")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return {"content": digest.hexdigest(), "width": info.width, "height": info.height, "fps": round(info.fps, 4),
            "seconds": round(info.duration, 4)}


def resample_step(ctx: Context, task: Task) -> dict:
    path = _source(ctx, task)
    with av.open(str(path), metadata_errors="ignore") as container:
        rate = container.streams.audio[0].rate
    fps = task.inputs["fps"]
    if not ctx.settings.enabled("resample") and (abs(fps - FPS) > 0.01 or rate != 16000):
        raise Rejected("not 25 fps / 16 kHz", f"{fps:g} fps, {rate} Hz audio, and resampling is switched off")
    frames = probe_video(path).frames_at(FPS)
    samples = len(load_audio(path))  # decodes the whole track: damaged audio is found here
    return {"source_fps": fps, "audio_rate": rate, "frames": frames, "samples": samples}


def shots_step(ctx: Context, task: Task) -> dict:
    return {"cuts": detect_shots(_source(ctx, task), ctx.settings.shot_threshold)}


def faces_step(ctx: Context, task: Task) -> dict:
    track = detect_video_track(_source(ctx, task), _detector(ctx))
    counts = track.counts
    if counts["found"] == 0:
        raise Rejected("no face", f"no face found in {track.num_frames} frames ({track.backend})")
    name = Path(WORK_DIR, "tracks", task.video).with_suffix(f".{task.inputs['tag']}.npz").as_posix()
    track.save(Path(ctx.output_dir) / name)
    return {"track": name, **counts}


def segments_step(ctx: Context, task: Task) -> dict:
    track = FaceTrack.load(Path(ctx.output_dir) / task.inputs["track"])
    present = track.present.copy()
    present[task.inputs["samples"] // SAMPLES_PER_FRAME :] = False  # a clip needs speech to its last frame
    shots = shot_spans(task.inputs["cuts"], len(present))
    spans = segment_spans(present, shots, *ctx.settings.clip_frames())
    if not spans:
        s = ctx.settings
        raise Rejected("no segment", f"no stretch of {s.min_seconds:g} s with the face visible within one shot "
                                     f"({len(shots)} shot(s); {track.summary()})")
    return {"spans": [list(span) for span in spans], "shots": len(shots)}


# clip steps
def face_filter_step(ctx: Context, task: Task) -> dict:
    start, end = task.inputs["span"]
    track = FaceTrack.load(Path(ctx.output_dir) / task.inputs["track"])
    boxes = track.boxes[start:end][track.present[start:end]]
    size = float(np.median(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
    detector = _detector(ctx)
    looks = [start, (start + end - 1) // 2, end - 1]
    faces = max(len(detector.detect(frame)) for _, frame in read_frames(_source(ctx, task), FPS, looks))
    return {"face_size": round(size, 2), "faces": int(faces)}


def align_step(ctx: Context, task: Task) -> dict:
    start, end = task.inputs["span"]
    source = _source(ctx, task)
    track = load_video_track(Path(ctx.output_dir) / task.inputs["track"], probe_video(source))
    # .mov: never taken for a kept .mp4 clip; the tag (from the step's key) keeps other settings' files apart
    name = f"{WORK_DIR}/aligned/{clip_stem(task.video, start, end)}.{task.inputs['tag']}.mov"
    aligner = _cached(("aligner", ctx.settings.resolution, ctx.device),
                      lambda: FaceAligner(ctx.settings.resolution, ctx.device))
    write_aligned_clip(source, Path(ctx.output_dir) / name, track, aligner, start, end, load_audio(source))
    return {"aligned": name}


def sync_step(ctx: Context, task: Task) -> dict:
    w = ctx.weights
    scorer = _cached(("sync", w["syncnet_v2"], w["s3fd"], ctx.model_device),
                     lambda: SyncFilter(w["syncnet_v2"], w["s3fd"], ctx.model_device))
    try:
        offset, confidence = scorer(Path(ctx.output_dir) / task.inputs["aligned"])
    except LatentSyncError as exc:
        raise Rejected("no sync face", exc.message) from exc
    return {"sync_offset": offset, "sync_confidence": round(confidence, 6)}


def quality_step(ctx: Context, task: Task) -> dict:
    path = ctx.weights["hyperiqa"]
    scorer = _cached(("quality", path, ctx.model_device), lambda: QualityFilter(path, ctx.model_device))
    return {"quality": round(scorer(Path(ctx.output_dir) / task.inputs["aligned"]), 6)}


def publish_step(ctx: Context, task: Task) -> dict:
    start, end = task.inputs["span"]
    offset = task.inputs["offset"]
    name = f"{CLIPS_DIR}/{clip_stem(task.video, start, end)}.mp4"
    speech = clip_audio(load_audio(_source(ctx, task)), start, end, offset)
    publish_clip(Path(ctx.output_dir) / task.inputs["aligned"], Path(ctx.output_dir) / name, speech)
    return {"path": name, "shift_ms": offset * 1000 // int(FPS)}


STEP_FUNCTIONS: dict[str, Callable[[Context, Task], dict]] = {
    "read": read_step, "resample": resample_step, "shots": shots_step, "faces": faces_step,
    "segments": segments_step, "face_filter": face_filter_step, "align": align_step, "sync": sync_step,
    "quality": quality_step, "publish": publish_step,
}

# Models, detectors and aligners of this worker process, built on first use.
_CACHE: dict[tuple, Any] = {}


def _cached(key: tuple, build: Callable[[], Any]) -> Any:
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def _detector(ctx: Context):
    return _cached(("detector", ctx.face_backend, ctx.checkpoint_dir, ctx.device),
                   lambda: create_detector(ctx.face_backend, ctx.checkpoint_dir, ctx.device, ctx.offline))
