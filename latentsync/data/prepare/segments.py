"""Shot detection (PySceneDetect's adaptive detector on the 25 fps frames) and cutting shots into segments."""

from __future__ import annotations

import math
import os

import cv2
import numpy as np

from ...media import FPS, read_frames

SHOT_WIDTH = 256  # frames are scaled to about this width before scoring, as PySceneDetect does by default


def detect_shots(video: str | os.PathLike, threshold: float = 2.0) -> list[int]:
    """Frame indices (25 fps) where a new shot starts, found by PySceneDetect's `AdaptiveDetector` with
    `adaptive_threshold` = `threshold` (the published pipeline used 2) on BGR frames scaled to ~256 px wide."""
    from scenedetect import AdaptiveDetector, FrameTimecode
    from scenedetect.scene_manager import compute_downscale_factor

    detector = AdaptiveDetector(adaptive_threshold=threshold)
    cuts: list[int] = []
    factor = None
    for index, frame in read_frames(video, FPS):
        if factor is None:
            factor = compute_downscale_factor(frame.shape[1], SHOT_WIDTH)
        if factor > 1:
            frame = cv2.resize(frame, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_LINEAR)
        found = detector.process_frame(FrameTimecode(index, FPS), frame[:, :, ::-1].copy())
        cuts += [int(t.frame_num) for t in found]
    return sorted(c for c in set(cuts) if c > 0)


def shot_spans(cuts: list[int], num_frames: int) -> list[tuple[int, int]]:
    """(start, end) frame ranges (end exclusive) of the shots between the cuts."""
    bounds = [0, *[c for c in cuts if 0 < c < num_frames], num_frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def segment_spans(
    present: np.ndarray, shots: list[tuple[int, int]], min_frames: int, max_frames: int
) -> list[tuple[int, int]]:
    """Segments: the stretches of each shot where the face is continuously present, each split into equal parts of
    at most `max_frames`, keeping the parts of at least `min_frames` (a stretch that cannot be split into parts of
    at least `min_frames` keeps as many such parts as fit)."""
    spans: list[tuple[int, int]] = []
    for shot_start, shot_end in shots:
        inside = np.asarray(present[shot_start:shot_end], np.int8)
        edges = np.diff(np.concatenate([[0], inside, [0]]))
        for start, end in zip(np.flatnonzero(edges == 1) + shot_start, np.flatnonzero(edges == -1) + shot_start):
            length = end - start
            if length < min_frames:
                continue
            parts = math.ceil(length / max_frames)
            if length // parts < min_frames:  # e.g. 11 s with 5-10 s segments: one 10 s part, the rest dropped
                parts, length = length // min_frames, min(length, (length // min_frames) * max_frames)
            bounds = np.linspace(start, start + length, parts + 1).round().astype(int)
            spans += [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    return spans
