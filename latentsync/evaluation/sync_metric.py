"""Sync-C / Sync-D of a generated video, with its per-window confidence over time for the report's plots.

The scoring itself (SyncNet v2, MFCC, the offset search) is `latentsync.evaluation.sync`; this module picks the
faces it scores:
- "s3fd" (default, as published): the published S3FD detector, tracker and crop (`score_video`);
- "tracker": this project's face tracker (`latentsync.face.track_faces`), whose boxes go through the published
  crop; each run of consecutive frames with the face is scored as one track. Useful where S3FD finds no track
  (the published tracker drops tracks of 50 frames or fewer, i.e. videos of 2 s or less).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..media import FPS, read_frames

SYNC_FACES = ("s3fd", "tracker")
MIN_RUN = 6  # frames: one 5-frame window plus the unused last frame (see sync.num_windows)
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
WINDOW_CENTRE = 2.5 / FPS  # seconds from a window's first frame to its centre


def load_sync_models(paths: dict[str, Path], faces: str, device: torch.device) -> dict[str, Any]:
    """SyncNet v2 (and S3FD for the published face source) on `device`."""
    from . import load_s3fd, load_syncnet_v2

    models = {"net": load_syncnet_v2(paths["syncnet_v2"], device=device)}
    if faces == "s3fd":
        models["s3fd"] = load_s3fd(paths["s3fd"], device=device)
    return models


def _runs(present: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of the runs of consecutive True values, end exclusive."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], present.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _summary(results: list[tuple[int, Any]]) -> tuple[dict, dict]:
    """Metrics and the confidence series of scored tracks given as (first frame, SyncResult)."""
    from .sync import combine_tracks

    combined = combine_tracks([r for _, r in results])
    metrics = {"sync_c": combined.sync_c, "sync_d": combined.sync_d, "offset": combined.offset,
               "sync_tracks": combined.num_tracks}
    times, conf = [], []
    for first, r in results:
        times.extend((first / FPS + r.window_times + WINDOW_CENTRE).tolist())
        conf.extend(np.asarray(r.framewise_conf_smoothed, float).tolist())
    return metrics, {"sync_time": times, "sync_confidence": conf}


def _tracker_tracks(video: Path, models: dict, detector) -> list[tuple[int, Any]]:
    """Score each run of consecutive frames where this project's tracker follows the face."""
    from ..face import track_faces
    from .crops import FaceTrack as CropTrack
    from .crops import audio_int16, track_crops
    from .sync import sync_confidence

    track = track_faces((f for _, f in read_frames(video)), detector, fps=FPS)
    samples = audio_int16(video)
    results = []
    for start, end in _runs(track.present):
        end = min(end, len(samples) // SAMPLES_PER_FRAME)  # frames the audio covers
        if end - start < MIN_RUN:
            continue
        crops = track_crops(video, CropTrack(np.arange(start, end), track.boxes[start:end].astype(np.float64)))
        audio = samples[start * SAMPLES_PER_FRAME:end * SAMPLES_PER_FRAME]
        results.append((start, sync_confidence(models["net"], crops, audio)))
    return results


def sync_metric(video: Path, models: dict, faces: str, detector) -> tuple[dict, dict, list[str]]:
    """(metrics, series, notes) of one generated video: Sync-C, Sync-D, offset and the confidence over time."""
    reason = "no face run of 6 frames or more"
    if faces == "tracker":
        results = _tracker_tracks(video, models, detector)
    else:
        from .crops import score_video

        scored = score_video(video, models["net"], models["s3fd"])
        results = [(t.first_frame, t.result) for t in scored.tracks]
        reason = scored.reason
    if not results:
        hint = " (try --sync-faces tracker)" if faces == "s3fd" else ""
        return {"sync_c": None, "sync_d": None, "offset": None, "sync_tracks": 0}, {}, [
            f"{video.name}: no Sync-C / Sync-D: {reason}{hint}"]
    metrics, series = _summary(results)
    return metrics, series, []
