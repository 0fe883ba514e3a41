"""The face stage applied to a video file: its face track (detected, or a saved one checked against the video) and
the alignment matrices of any range of its frames. Inference, avatars and data preparation all go through here."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..media import FPS, VideoInfo, read_frames
from .detectors import FaceDetector
from .track import FaceSelection, FaceTrack, track_faces

if TYPE_CHECKING:  # the aligner needs torch; checking a saved track must not load it
    from .align import FaceAligner


def detect_video_track(
    video: str | os.PathLike,
    detector: FaceDetector,
    selection: FaceSelection | None = None,
    *,
    progress: bool = False,
    total: int | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> FaceTrack:
    """Follow the selected face through the video's frames at 25 fps (see `track_faces`; `total`: the frame count,
    for the progress bar)."""
    frames = (frame for _, frame in read_frames(video, fps=FPS))
    return track_faces(frames, detector, selection, fps=FPS, progress=progress, total=total, on_frame=on_frame)


def load_video_track(source: str | os.PathLike | FaceTrack, info: VideoInfo) -> FaceTrack:
    """A saved face track (or one in memory), checked to belong to a video of this size and frame count at 25 fps."""
    track = source if isinstance(source, FaceTrack) else FaceTrack.load(source)
    track.check(info.width, info.height, info.frames_at(FPS))
    return track


def track_matrices(aligner: FaceAligner, track: FaceTrack, start: int = 0, end: int | None = None) -> np.ndarray:
    """Alignment matrices (end - start, 2, 3) of frames start .. end-1; NaN where the face is absent.

    The published smoothing runs through each stretch of consecutive frames with a face, from its first frame, so a
    range that starts inside a stretch gets exactly the matrices the whole stretch would give there.
    """
    end = track.num_frames if end is None else end
    matrices = np.full((end - start, 2, 3), np.nan)
    edges = np.diff(np.concatenate([[0], track.present.astype(np.int8), [0]]))
    for first, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        if stop <= start or first >= end:
            continue
        stop = min(stop, end)
        skip = max(first, start) - first
        matrices[first + skip - start : stop - start] = aligner.matrices(track.points[first:stop])[skip:]
    return matrices
