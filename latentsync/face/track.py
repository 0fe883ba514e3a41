"""Which face to follow through a video, and the per-frame result (`FaceTrack`) that can be saved, edited
and reused.

Unlike the published code (largest face on every frame, abort on a frame without one), a face is chosen
once, on the first frame that has a usable face, and then followed by box overlap. Short absences are
bridged by linear interpolation; frames of longer absences are marked absent, and the pipeline passes
them through untouched. Frames are streamed: only a few numbers per frame are kept.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path
from ..progress import progress_bar
from .detectors.base import Detections, FaceDetector, as_rgb_frame, box_iou
from .landmarks import round_anchors

log = logging.getLogger(__name__)

# Published filters: the box must be at least 50 x 80 px. They were set for full-HD video; frames whose
# shorter side is under 1080 px scale the minimum down in proportion (a 360 px wide video keeps faces of
# 17 x 27 px and more), so a downscaled copy keeps the faces of its original. MediaPipe boxes (the mesh
# extent) are a little tighter than SCRFD boxes; they are filtered as they are.
PUBLISHED_MIN_SIZE = (50.0, 80.0)
FULL_SIZE_SHORT_SIDE = 1080
TRACK_FORMAT = "latentsync-face-track"
TRACK_VERSION = 1


EXAMPLE_BOX = "100,80,260,300"  # x1,y1,x2,y2: a valid box, quoted in hints


def _is_whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _all_finite(values) -> bool:
    return all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values)


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


@dataclass(frozen=True)
class FaceSelection:
    """Which face to follow and how: which detections count as faces, and how gaps are handled.

    At most one of: `index` (position from the left, from 0, on the first frame with a usable face),
    `point` (x, y) inside the wanted face's box, `box` (x1, y1, x2, y2) overlapping it, all on that
    first frame. None of them: the largest face (the published rule). Then the chosen face is followed by
    its box overlap (IoU >= `min_iou` with where it was last seen), never re-picked by size.
    Filters: `min_size` (w, h) in pixels (None: the published 50 x 80, scaled down for frames with a
    shorter side under 1080 px), `aspect_range` for w / h, `min_score`.
    Gaps: an absence of at most `max_gap` frames is bridged by linear interpolation; longer ones, and
    frames before the first or after the last sighting, are absent. `stride` > 1 detects only every
    k-th frame (and the last one) and interpolates between, so it must be at most max_gap + 1.
    """

    index: int | None = None
    point: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None
    min_size: tuple[float, float] | None = None
    min_score: float = 0.5
    aspect_range: tuple[float, float] = (0.2, 1.5)
    min_iou: float = 0.3
    max_gap: int = 12
    stride: int = 1

    def __post_init__(self):
        if sum(v is not None for v in (self.index, self.point, self.box)) > 1:
            raise InputError("choose the face by index, by point or by box, not several at once",
                             "give only one of --face-index, --face-point, --face-box")
        if self.index is not None and (not _is_whole(self.index) or self.index < 0):
            raise InputError(f"the face index must be a whole number, 0 or more, got {self.index!r}",
                             "faces are numbered from 0, left to right: --face-index 0 is the leftmost")
        if self.point is not None and (len(self.point) != 2 or not _all_finite(self.point)):
            raise InputError(f"a face point is two numbers X,Y in pixels, got {self.point}", "e.g. --face-point 180,200")
        if self.box is not None and (len(self.box) != 4 or not _all_finite(self.box)
                                     or self.box[2] <= self.box[0] or self.box[3] <= self.box[1]):
            raise InputError(f"a face box is X1,Y1,X2,Y2 in pixels with X2 > X1 and Y2 > Y1, got {self.box}",
                             f"give the top-left and bottom-right corners, e.g. --face-box {EXAMPLE_BOX}")
        if not _is_whole(self.max_gap) or self.max_gap < 0:
            raise InputError(f"--max-gap (the longest face absence to bridge, in frames) must be a whole number, 0 or "
                             f"more, got {self.max_gap!r}", "0 bridges nothing; the default is 12 (about half a second)")
        if not _is_whole(self.stride) or not 1 <= self.stride <= self.max_gap + 1:
            raise InputError(f"the detection stride must be from 1 to max_gap + 1 = {self.max_gap + 1}, got "
                             f"{self.stride!r}", "frames skipped between detections are bridged like a face gap")

    def size_limits(self, width: int, height: int) -> tuple[float, float]:
        """Minimum face box (w, h) in pixels for frames of this size."""
        if self.min_size is not None:
            return float(self.min_size[0]), float(self.min_size[1])
        scale = min(1.0, min(width, height) / FULL_SIZE_SHORT_SIDE)
        return PUBLISHED_MIN_SIZE[0] * scale, PUBLISHED_MIN_SIZE[1] * scale

    def usable(self, dets: Detections, min_w: float, min_h: float) -> np.ndarray:
        """Indices of the detections that pass the filters, in detection order."""
        # Integer boxes, as the published filter truncates them.
        ib = np.trunc(dets.boxes)
        w, h = ib[:, 2] - ib[:, 0], ib[:, 3] - ib[:, 1]
        ratio = w / np.maximum(h, 1e-9)
        ok = (w >= min_w) & (h >= min_h) & (h > 0) & (dets.scores >= self.min_score)
        ok &= (ratio >= self.aspect_range[0]) & (ratio <= self.aspect_range[1])
        return np.flatnonzero(ok)

    def first_pick(self, dets: Detections, usable: np.ndarray, frame_index: int) -> int:
        """The chosen face among the usable detections of the first frame that has any."""
        left_to_right = usable[np.argsort(_centres(dets.boxes[usable])[:, 0], kind="stable")]
        boxes = dets.boxes[usable]
        listing = ", ".join(f"#{k} ({b[0]:.0f}, {b[1]:.0f}, {b[2]:.0f}, {b[3]:.0f})"
                            for k, b in enumerate(dets.boxes[left_to_right]))
        where = f"frame {frame_index} (the first with a usable face) has faces {listing}"
        if self.index is not None:
            if self.index >= len(usable):
                raise InputError(f"face index {self.index} asked for, but {where}",
                                 "faces are numbered from 0, left to right")
            return int(left_to_right[self.index])
        if self.point is not None:
            x, y = self.point
            inside = (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])
            if not inside.any():
                raise InputError(f"no face contains the point ({x:g}, {y:g}); {where}",
                                 "pick a point inside one of those boxes")
            dist = np.linalg.norm(_centres(boxes) - np.array([x, y]), axis=1)
            return int(usable[np.argmin(np.where(inside, dist, np.inf))])
        if self.box is not None:
            overlap = box_iou(np.asarray(self.box, np.float64), boxes)
            if overlap.max() <= 0:
                raise InputError(f"no face overlaps the box {tuple(self.box)}; {where}",
                                 "give a box over one of those faces")
            return int(usable[np.argmax(overlap)])
        return self.largest(dets, usable)

    @staticmethod
    def largest(dets: Detections, usable: np.ndarray) -> int:
        """The usable detection with the largest (integer) box area; the first one on ties, as published."""
        ib = np.trunc(dets.boxes[usable])
        return int(usable[np.argmax((ib[:, 2] - ib[:, 0]) * (ib[:, 3] - ib[:, 1]))])


@dataclass
class FaceTrack:
    """Per-frame face of one video: where the chosen face is, or that it is absent.

    present (N,) bool; interpolated (N,) bool (present but bridged, not detected); points (N, 3, 2) int32
    alignment anchors (zeros where absent); boxes (N, 4) float32 (zeros where absent); and the frame size
    the track belongs to, the detector backend and the video's fps when known.
    """

    present: np.ndarray
    interpolated: np.ndarray
    points: np.ndarray
    boxes: np.ndarray
    width: int
    height: int
    backend: str
    fps: float | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.present)
        self.present = np.asarray(self.present, bool)
        self.interpolated = np.asarray(self.interpolated, bool)
        self.points = np.asarray(self.points).astype(np.int32)
        self.boxes = np.asarray(self.boxes, np.float32)
        shapes = (self.interpolated.shape, self.points.shape, self.boxes.shape)
        if shapes != ((n,), (n, 3, 2), (n, 4)):
            raise InputError(f"inconsistent face track arrays for {n} frames: {shapes}")
        if (self.interpolated & ~self.present).any():
            raise InputError("a face track frame is marked interpolated but not present")

    def __len__(self) -> int:
        return len(self.present)

    @property
    def num_frames(self) -> int:
        return len(self.present)

    @property
    def counts(self) -> dict[str, int]:
        """Frames with the face detected, bridged by interpolation, and absent."""
        return {
            "found": int((self.present & ~self.interpolated).sum()),
            "interpolated": int(self.interpolated.sum()),
            "absent": int((~self.present).sum()),
        }

    def summary(self) -> str:
        c = self.counts
        return (f"{len(self)} frames: face found in {c['found']}, bridged in {c['interpolated']}, "
                f"absent in {c['absent']} ({self.backend})")

    def check(self, width: int, height: int, num_frames: int | None = None) -> None:
        """Raise InputError unless the track fits a video of this size (and frame count, when given)."""
        hint = "detect faces again for this video, or give the face track saved for it"
        if (width, height) != (self.width, self.height):
            raise InputError(
                f"the face track is for {self.width}x{self.height} frames, the video is {width}x{height}", hint
            )
        if num_frames is not None and num_frames != len(self):
            raise InputError(f"the face track has {len(self)} frames, the video has {num_frames}", hint)

    def _header(self) -> dict:
        return {"format": TRACK_FORMAT, "version": TRACK_VERSION, "backend": self.backend, "width": self.width,
                "height": self.height, "fps": self.fps, "counts": self.counts, "meta": self.meta}

    def save(self, path: str | os.PathLike) -> Path:
        """Write as .npz (arrays) or .json (one record per frame, for reading and editing), by suffix."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".npz", ".json"):
            raise InputError(f"a face track is saved as .npz or .json, not {path.name!r}", "e.g. track.json")
        with atomic_path(path) as tmp:
            if suffix == ".npz":
                np.savez_compressed(tmp, present=self.present, interpolated=self.interpolated, points=self.points,
                                    boxes=self.boxes, header=np.array(json.dumps(self._header())))
            else:
                frames = [
                    {"present": True, "interpolated": bool(i), "points": p.tolist(),
                     "box": [round(float(v), 2) for v in b]} if ok else {"present": False}
                    for ok, i, p, b in zip(self.present, self.interpolated, self.points, self.boxes)
                ]
                tmp.write_text(json.dumps({**self._header(), "frames": frames}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FaceTrack":
        """Read a track written by `save` (possibly edited by hand)."""
        path = Path(path)
        hint = "give a track written by `latentsync track` or `--save-track`, or leave out --track to detect the face"
        if not path.exists():
            raise InputError(f"face track file not found: {path}", "check the path")
        if not path.is_file():
            raise InputError(f"the face track {path} is not a file", hint)
        if path.suffix.lower() not in (".json", ".npz"):
            raise InputError(f"a face track is a .json or .npz file, got {path.name!r}", hint)
        try:
            if path.suffix.lower() == ".npz":
                with np.load(path, allow_pickle=False) as data:
                    header = json.loads(str(data["header"]))
                    _check_format(header)
                    arrays = {k: data[k] for k in ("present", "interpolated", "points", "boxes")}
            else:
                header = json.loads(path.read_text())
                _check_format(header)
                arrays = _arrays_from_records(header["frames"])
            return cls(**arrays, width=int(header["width"]), height=int(header["height"]),
                       backend=str(header["backend"]), fps=header.get("fps"), meta=header.get("meta") or {})
        except InputError as exc:  # arrays that do not fit together
            raise InputError(f"cannot read the face track {path}: {exc.message}", hint) from exc
        except KeyError as exc:
            raise InputError(f"the face track {path} is incomplete: it has no {exc.args[0]!r} entry", hint) from exc
        except PermissionError as exc:
            raise InputError(f"cannot read the face track {path}: permission denied",
                             "check the file's permissions, e.g. `chmod a+r FILE`") from exc
        except (ValueError, TypeError, OSError, zipfile.BadZipFile) as exc:
            reason = f"not valid JSON ({exc.msg})" if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise InputError(f"cannot read the face track {path}: {reason}", hint) from exc


def _check_format(header: object) -> None:
    if not isinstance(header, dict) or header.get("format") != TRACK_FORMAT:
        raise ValueError(f"not a latentsync face track (no \"format\": \"{TRACK_FORMAT}\" entry)")


def _arrays_from_records(frames: list[dict]) -> dict[str, np.ndarray]:
    n = len(frames)
    present, interpolated = np.zeros(n, bool), np.zeros(n, bool)
    points, boxes = np.zeros((n, 3, 2), np.int32), np.zeros((n, 4), np.float32)
    for i, rec in enumerate(frames):
        if not isinstance(rec, dict):
            raise ValueError(f"frame {i} is not a record like {{\"present\": false}}")
        if not rec.get("present"):
            continue
        present[i], interpolated[i] = True, bool(rec.get("interpolated", False))
        try:
            pts, box = np.asarray(rec["points"], np.float64), np.asarray(rec["box"], np.float64)
        except KeyError as exc:
            raise ValueError(f"frame {i} is marked present but has no {exc.args[0]!r}") from exc
        if pts.shape != (3, 2) or box.shape != (4,) or not (np.isfinite(pts).all() and np.isfinite(box).all()):
            raise ValueError(f"frame {i}: points must be 3 (x, y) pairs and box 4 numbers")
        points[i], boxes[i] = np.round(pts), box
    return {"present": present, "interpolated": interpolated, "points": points, "boxes": boxes}


class _Follower:
    """Picks the chosen face on each detected frame: first by the selection, then by box overlap."""

    def __init__(self, selection: FaceSelection, width: int, height: int):
        self.selection = selection
        self.min_w, self.min_h = selection.size_limits(width, height)
        self.last_box: np.ndarray | None = None
        self.last_seen = -1

    def choose(self, dets: Detections, frame_index: int) -> int | None:
        usable = self.selection.usable(dets, self.min_w, self.min_h)
        if usable.size == 0:
            return None
        if self.last_box is None:
            pick = self.selection.first_pick(dets, usable, frame_index)
        else:
            overlap = box_iou(self.last_box, dets.boxes[usable])
            if overlap.max() >= self.selection.min_iou:
                pick = int(usable[np.argmax(overlap)])
            elif frame_index - self.last_seen - 1 > self.selection.max_gap:
                pick = self._reacquire(dets, usable)
            else:
                return None  # another face, while ours may come back within the gap
        self.last_box, self.last_seen = dets.boxes[pick].astype(np.float64), frame_index
        return pick

    def _reacquire(self, dets: Detections, usable: np.ndarray) -> int:
        """After a long absence: the largest face by default, else the one nearest to where ours was."""
        sel = self.selection
        if sel.index is None and sel.point is None and sel.box is None:
            return sel.largest(dets, usable)
        dist = np.linalg.norm(_centres(dets.boxes[usable]) - _centres(self.last_box[None])[0], axis=1)
        return int(usable[np.argmin(dist)])


def _bridge(num_frames: int, seen: list[int], boxes: list[list], points: list[list], max_gap: int):
    """Per-frame arrays from the frames where the face was seen, interpolating gaps of <= max_gap frames."""
    present, interpolated = np.zeros(num_frames, bool), np.zeros(num_frames, bool)
    all_points, all_boxes = np.zeros((num_frames, 3, 2)), np.zeros((num_frames, 4))
    if seen:
        present[seen], all_points[seen], all_boxes[seen] = True, points, boxes
    for a, b in zip(seen, seen[1:]):
        gap = b - a - 1
        if 0 < gap <= max_gap:
            t = np.arange(1, gap + 1) / (gap + 1)
            all_points[a + 1:b] = all_points[a] + (all_points[b] - all_points[a]) * t[:, None, None]
            all_boxes[a + 1:b] = all_boxes[a] + (all_boxes[b] - all_boxes[a]) * t[:, None]
            present[a + 1:b] = interpolated[a + 1:b] = True
    return present, interpolated, round_anchors(all_points), all_boxes


def track_faces(
    frames: Iterable[np.ndarray],
    detector: FaceDetector,
    selection: FaceSelection | None = None,
    *,
    fps: float | None = None,
    progress: bool = False,
    total: int | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> FaceTrack:
    """Follow one face through a stream of RGB uint8 frames (all of one size) and return its track.

    `selection` picks the face and sets the filters and gap handling (default: the largest usable face,
    gaps up to 12 frames bridged); `fps` is stored in the track; `progress` shows a progress bar of `total`
    frames; `on_frame(frames_done)` is called after each frame (it may raise to stop).
    Never raises for frames without a face.
    """
    selection = selection or FaceSelection()
    stride = selection.stride
    seen: list[int] = []
    boxes: list[list] = []  # per sighting, as Python numbers
    points: list[list] = []
    size: tuple[int, int] | None = None
    follower: _Follower | None = None
    pending: tuple[int, np.ndarray] | None = None  # last frame, held so that the video's end is detected
    num_frames = 0

    def observe(index: int, frame: np.ndarray) -> None:
        dets = detector.detect_next(frame)
        pick = follower.choose(dets, index)
        if pick is not None:
            seen.append(index)
            # As Python numbers: a tiny numpy array kept per frame would pin C heap memory between the detector's
            # frame-sized buffers, and the resident size would grow by megabytes per frame.
            boxes.append(dets.boxes[pick].tolist())
            points.append(dets.points[pick].tolist())

    detector.reset()
    try:
        with progress_bar(desc="faces", unit="frame", total=total, disable=not progress) as bar:
            for index, frame in enumerate(frames):
                frame = as_rgb_frame(frame)
                if size is None:
                    size = (frame.shape[1], frame.shape[0])
                    follower = _Follower(selection, *size)
                elif (frame.shape[1], frame.shape[0]) != size:
                    raise InputError(
                        f"frame {index} is {frame.shape[1]}x{frame.shape[0]}, earlier frames {size[0]}x{size[1]}",
                        f"re-encode the video at one size, e.g. `ffmpeg -i IN -vf scale={size[0]}:{size[1]} out.mp4`",
                    )
                num_frames = index + 1
                if index % stride == 0:
                    observe(index, frame)
                    pending = None
                else:
                    pending = (index, frame)
                bar.update(1)
                if on_frame is not None:
                    on_frame(num_frames)
            if pending is not None:
                observe(*pending)
    finally:
        detector.reset()
    if size is None:
        raise InputError("the video has no frames", "pass a video with at least one frame")
    present, interpolated, all_points, all_boxes = _bridge(num_frames, seen, boxes, points, selection.max_gap)
    track = FaceTrack(present, interpolated, all_points, all_boxes, width=size[0], height=size[1],
                      backend=detector.name, fps=fps, meta={"selection": asdict(selection)})
    log.info("face track: %s", track.summary())
    return track
