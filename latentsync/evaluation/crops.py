"""Face tracks, face crops and the Sync-C / Sync-D of a whole video, as the published evaluation makes them.

Published steps (LatentSync `eval/syncnet_detect.py` + `eval/syncnet/syncnet_eval.py`, after syncnet_python):
S3FD on every 25 fps frame (scale 0.25, confidence 0.9); scene cuts by PySceneDetect's content detector; within
each scene of at least `min_track` frames, tracks of boxes overlapping the track's last box by IoU > 0.5 with
gaps of at most 25 frames, kept when they hold more than `min_track` detections and their mean width or height
exceeds 100 px, missing frames linearly interpolated; each track cropped around its 13-tap median-filtered box
(zero padded, so the ends drift toward the top-left), padded with grey 110, 224 x 224 bilinear; then SyncNet v2
on the crops and the track's audio. Tracks are combined by offset = int(mean), confidence = mean.

How `score_video` differs from the published scripts:
- Frames are decoded once, directly, at 25 fps (nearest source frame, `latentsync.media.read_frames`). The published
  scripts re-encode the video with ffmpeg (`-r 25`), extract JPEGs (`-qscale:v 2`) for detection, write each crop
  video with the mp4v codec, and extract JPEGs again before SyncNet sees the crops: three lossy steps we skip.
  Crops therefore differ by codec noise, and Sync-C / Sync-D by a little.
- The track's audio is cut from the decoded 16 kHz samples (frames first..last -> samples 640 * first ..
  640 * (last + 1)); the published script cuts it with ffmpeg, muxes it as AAC and decodes it again (padding the
  end, e.g. 48000 -> 48128 samples; the window count is the same).
- Scene cuts come from PySceneDetect's `ContentDetector` (the installed version's defaults) fed our decoded frames,
  downscaled as its `SceneManager` would; the published script ran it on the re-encoded file.
- Missing frames are interpolated with `np.interp` (the published script uses scipy's `interp1d`: same formula).
- A video without a usable face track gives a `VideoSync` with `tracks == []`, `combined is None` and a `reason`,
  not a crash; a video without audio raises InputError before any detection.
The tracking loop reproduces a quirk of the published one: after a face joins a track, the next face listed for
the same frame is not considered for that track (it stays for a later track).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import torch

from ..errors import InputError, LatentSyncError
from ..face.detectors.base import box_iou
from .s3fd import S3FD
from .sync import FPS, SAMPLES_PER_FRAME, VSHIFT, CombinedSync, SyncResult, combine_tracks, median_filter, sync_confidence
from .syncnet_v2 import CROP_SIZE, SyncNetV2

MIN_TRACK = 50  # a track needs more detections than this, and a scene at least this many frames
MAX_GAP = 25  # frames a track may go without a detection
TRACK_IOU = 0.5
MIN_FACE_SIZE = 100.0  # px, mean box width or height
CROP_SCALE = 0.4
PAD_VALUE = 110
SMOOTH_TAPS = 13
DETECT_THRESHOLD = 0.9
DETECT_SCALE = 0.25


@dataclass(frozen=True)
class FaceTrack:
    """One face followed through consecutive 25 fps frames: `frames` (N,) indices, `boxes` (N, 4) float64 x1, y1, x2, y2
    (interpolated where the detector missed it)."""

    frames: np.ndarray
    boxes: np.ndarray

    @property
    def first_frame(self) -> int:
        return int(self.frames[0])

    @property
    def last_frame(self) -> int:
        return int(self.frames[-1])


# --- crops -------------------------------------------------------------------------------------------------------


def smooth_boxes(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-size s = max(w, h) / 2 and centre x, y of each box, each through the 13-tap zero-padded median filter."""
    boxes = np.asarray(boxes, np.float64)
    s = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    y = (boxes[:, 1] + boxes[:, 3]) / 2
    x = (boxes[:, 0] + boxes[:, 2]) / 2
    return tuple(median_filter(v, SMOOTH_TAPS) for v in (s, x, y))


def crop_rects(s: np.ndarray, x: np.ndarray, y: np.ndarray, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """(N, 5) int64: padding p and row start, row end, column start, column end of each crop in the frame padded by p.

    p = int(1.8 s); rows from the centre - s to the centre + 1.8 s (the mouth sits below the box centre), columns
    1.4 s either side; every bound truncated with int() as published.
    """
    rects = []
    for bs, cx, cy in zip(s, x, y):
        pad = int(bs * (1 + 2 * crop_scale))
        my, mx = cy + pad, cx + pad
        rects.append((pad, int(my - bs), int(my + bs * (1 + 2 * crop_scale)),
                      int(mx - bs * (1 + crop_scale)), int(mx + bs * (1 + crop_scale))))
    return np.asarray(rects, np.int64).reshape(-1, 5)


def crop_face(frame: np.ndarray, rect: Sequence[int]) -> np.ndarray:
    """The 224 x 224 crop of one frame for one `crop_rects` row (any channel order; bilinear resize).

    Equal to padding the whole frame with grey 110 and slicing it, without building the padded frame.
    """
    pad, r0, r1, c0, c1 = (int(v) for v in rect)
    height, width = frame.shape[:2]
    r0, c0 = max(r0, 0), max(c0, 0)
    r1, c1 = min(r1, height + 2 * pad), min(c1, width + 2 * pad)  # slicing stops at the padded frame's edge
    if r1 <= r0 or c1 <= c0:
        raise InputError(f"empty face crop (rows {r0}:{r1}, columns {c0}:{c1})", "check the face boxes")
    face = np.full((r1 - r0, c1 - c0, frame.shape[2]), PAD_VALUE, np.uint8)
    fr0, fr1 = max(r0 - pad, 0), min(r1 - pad, height)
    fc0, fc1 = max(c0 - pad, 0), min(c1 - pad, width)
    if fr1 > fr0 and fc1 > fc0:
        face[fr0 + pad - r0 : fr1 + pad - r0, fc0 + pad - c0 : fc1 + pad - c0] = frame[fr0:fr1, fc0:fc1]
    return cv2.resize(face, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)


# --- tracking ----------------------------------------------------------------------------------------------------


def track_faces(
    detections: Sequence[np.ndarray],
    first_frame: int = 0,
    *,
    min_track: int = MIN_TRACK,
    max_gap: int = MAX_GAP,
    min_face_size: float = MIN_FACE_SIZE,
) -> list[FaceTrack]:
    """Face tracks of one scene from per-frame (K, >= 4) boxes (frame i of the list is video frame first_frame + i).

    Tracks are built one after another from the faces not yet used, as published: a face joins when it is at
    most `max_gap` frames after the track's last face and overlaps it by IoU > 0.5; kept when longer than
    `min_track` detections and larger than `min_face_size` px on average (width or height).
    """
    pending = [[(first_frame + i, np.asarray(box[:4], np.float64)) for box in rows] for i, rows in enumerate(detections)]
    tracks = []
    while True:
        track: list[tuple[int, np.ndarray]] = []
        for faces in pending:
            i = 0
            while i < len(faces):
                frame, box = faces[i]
                if not track:
                    track.append(faces.pop(i))
                elif frame - track[-1][0] <= max_gap:
                    if box_iou(box, track[-1][1][None])[0] > TRACK_IOU:
                        track.append(faces.pop(i))
                else:
                    break
                i += 1  # after a pop this skips the face that moved up, like removing from a list being iterated
        if not track:
            return tracks
        if len(track) <= min_track:
            continue
        frames = np.array([f for f, _ in track])
        boxes = np.stack([b for _, b in track])
        every = np.arange(frames[0], frames[-1] + 1)
        filled = np.stack([np.interp(every, frames, boxes[:, j]) for j in range(4)], axis=1)
        if max(np.mean(filled[:, 2] - filled[:, 0]), np.mean(filled[:, 3] - filled[:, 1])) > min_face_size:
            tracks.append(FaceTrack(every, filled))


def tracks_in_scenes(
    detections: Sequence[np.ndarray],
    scenes: Iterable[tuple[int, int]],
    *,
    min_track: int = MIN_TRACK,
    min_face_size: float = MIN_FACE_SIZE,
) -> list[FaceTrack]:
    """`track_faces` in every scene (start, end exclusive) of at least `min_track` frames; shorter scenes are skipped."""
    tracks = []
    for start, end in scenes:
        if end - start >= min_track:
            tracks.extend(track_faces(detections[start:end], start, min_track=min_track, min_face_size=min_face_size))
    return tracks


class SceneCuts:
    """PySceneDetect's content detector fed frame by frame (downscaled as its SceneManager does)."""

    def __init__(self, fps: float = FPS):
        hint = "install the evaluation extra: pip install 'latentsync[eval]'"
        try:
            import scenedetect
            from scenedetect import ContentDetector, FrameTimecode
            from scenedetect.scene_manager import compute_downscale_factor
        except ImportError as exc:
            raise LatentSyncError("scene detection needs PySceneDetect 0.7 or newer", hint) from exc
        major_minor = re.match(r"(\d+)\.(\d+)", scenedetect.__version__)
        if major_minor is None or tuple(map(int, major_minor.groups())) < (0, 7):  # 0.6 numbers frames by int
            raise LatentSyncError(f"scene detection needs PySceneDetect 0.7 or newer, found {scenedetect.__version__}", hint)

        self._detector = ContentDetector()
        self._timecode = lambda i: FrameTimecode(i, fps=float(fps))
        self._factor = compute_downscale_factor
        self._cuts: set[int] = set()
        self._count = 0

    def feed(self, frame_bgr: np.ndarray) -> None:
        factor = self._factor(max(frame_bgr.shape[:2]))
        if factor > 1:
            size = (max(1, round(frame_bgr.shape[1] / factor)), max(1, round(frame_bgr.shape[0] / factor)))
            frame_bgr = cv2.resize(frame_bgr, size, interpolation=cv2.INTER_LINEAR)
        self._cuts.update(c.frame_num for c in self._detector.process_frame(self._timecode(self._count), frame_bgr))
        self._count += 1

    def scenes(self) -> list[tuple[int, int]]:
        """(start, end) frame ranges, end exclusive; the whole video when there is no cut (as published)."""
        if self._count:
            self._cuts.update(c.frame_num for c in self._detector.post_process(self._timecode(self._count - 1)))
        bounds = [0, *sorted(c for c in self._cuts if 0 < c < self._count), self._count]
        return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def find_face_tracks(
    path: str | os.PathLike,
    detector: S3FD,
    *,
    min_track: int = MIN_TRACK,
    min_face_size: float = MIN_FACE_SIZE,
    threshold: float = DETECT_THRESHOLD,
    scale: float = DETECT_SCALE,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[FaceTrack], int]:
    """Face tracks of a video (frames at 25 fps) and its frame count; frames are streamed in batches."""
    from ..media import read_frames

    detections: list[np.ndarray] = []
    cuts = SceneCuts()
    batch: list[np.ndarray] = []

    def flush() -> None:
        detections.extend(detector.detect_batch(batch, threshold, scale))
        if progress is not None:
            progress(len(batch))
        batch.clear()

    for _, frame in read_frames(path, FPS):
        cuts.feed(np.ascontiguousarray(frame[..., ::-1]))
        batch.append(frame)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return tracks_in_scenes(detections, cuts.scenes(), min_track=min_track, min_face_size=min_face_size), len(detections)


def track_crops(path: str | os.PathLike, track: FaceTrack, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """(N, 224, 224, 3) uint8 BGR crops of a track, read again from the video at 25 fps."""
    from ..media import read_frames

    rects = crop_rects(*smooth_boxes(track.boxes), crop_scale)
    crops = [crop_face(frame, rect) for (_, frame), rect in zip(read_frames(path, FPS, track.frames), rects)]
    return np.ascontiguousarray(np.stack(crops)[..., ::-1])


# --- whole video -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackSync:
    """Sync of one face track: frames first_frame..last_frame (25 fps) and the SyncNet result on its crops."""

    track: FaceTrack
    result: SyncResult

    @property
    def first_frame(self) -> int:
        return self.track.first_frame

    @property
    def last_frame(self) -> int:
        return self.track.last_frame

    @property
    def window_times(self) -> np.ndarray:
        """Video time in seconds at the start of each scored window."""
        return (self.first_frame + np.arange(self.result.num_windows)) / FPS


@dataclass(frozen=True)
class VideoSync:
    """Sync-C / Sync-D of a video: the tracks' results combined as published, or `combined is None` and a
    `reason` when no face track was usable."""

    num_frames: int
    tracks: list[TrackSync] = field(default_factory=list)
    combined: CombinedSync | None = None
    reason: str = ""

    @property
    def found_face(self) -> bool:
        return self.combined is not None

    def as_dict(self) -> dict:
        """Plain JSON-ready numbers: the combined values (None without a face track) and each track's frames,
        offset, Sync-C, Sync-D and per-window confidence at its window start times (seconds)."""
        combined = self.combined
        return {
            "num_frames": self.num_frames,
            "found_face": self.found_face,
            "reason": self.reason,
            "offset": combined.offset if combined else None,
            "sync_c": combined.sync_c if combined else None,
            "sync_d": combined.sync_d if combined else None,
            "tracks": [
                {
                    "first_frame": t.first_frame,
                    "last_frame": t.last_frame,
                    "offset": t.result.offset,
                    "sync_c": t.result.sync_c,
                    "sync_d": t.result.sync_d,
                    "window_times": t.window_times.tolist(),
                    "framewise_conf": t.result.framewise_conf.astype(float).tolist(),
                    "framewise_conf_smoothed": t.result.framewise_conf_smoothed.astype(float).tolist(),
                }
                for t in self.tracks
            ],
        }


def audio_int16(path: str | os.PathLike) -> np.ndarray:
    """The 16 kHz mono audio of a media file as int16 values (exact for 16-bit 16 kHz sources)."""
    from ..audio import load_audio

    samples = load_audio(path)
    return np.clip(np.round(samples.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)


def score_video(
    path: str | os.PathLike,
    syncnet: SyncNetV2,
    detector: S3FD,
    *,
    device: str | torch.device | None = None,
    min_track: int = MIN_TRACK,
    min_face_size: float = MIN_FACE_SIZE,
    face_threshold: float = DETECT_THRESHOLD,
    face_scale: float = DETECT_SCALE,
    vshift: int = VSHIFT,
    batch_size: int = 20,
    detect_batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> VideoSync:
    """Sync-C / Sync-D of a video file as the published evaluation computes them (see the module notes for the
    differences). `device`: where SyncNet runs (default: where `syncnet` is); the detector runs on its own device,
    `detect_batch_size` frames per network call; `batch_size` windows per SyncNet call.
    Raises InputError for a file without video or audio; a video without a usable face track is reported in the
    result (`found_face` False, `reason`). `progress(n)` is called after each batch of n frames is searched for faces."""
    samples = audio_int16(path)
    tracks, num_frames = find_face_tracks(path, detector, min_track=min_track, min_face_size=min_face_size,
                                          threshold=face_threshold, scale=face_scale, batch_size=detect_batch_size,
                                          progress=progress)
    if not tracks:
        return VideoSync(num_frames, reason=f"no face track: no face was followed for more than {min_track} frames "
                         f"({min_face_size:g} px or larger) in any scene of {num_frames} frames")
    results = []
    for track in tracks:
        crops = track_crops(path, track)
        audio = samples[track.first_frame * SAMPLES_PER_FRAME : (track.last_frame + 1) * SAMPLES_PER_FRAME]
        try:
            result = sync_confidence(syncnet, crops, audio, vshift=vshift, batch_size=batch_size, device=device)
        except InputError:  # the audio ends before this track has a scorable window
            continue
        results.append(TrackSync(track, result))
    if not results:
        return VideoSync(num_frames, reason="no face track: the audio is too short for every face track")
    return VideoSync(num_frames, results, combine_tracks([t.result for t in results]))
