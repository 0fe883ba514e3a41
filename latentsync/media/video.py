"""Reading videos: probe a file, and stream its frames as RGB at a fixed rate, in any order, in bounded memory.

Timestamps come from one pass over the container's packets (demuxing only, no decoding), which gives the exact
number of frames and the presentation time of each, also for variable frame rates and containers without a
frame count (mkv, webm). Files whose timestamps are missing or repeated (some avi files, raw streams, badly
muxed mp4s) fall back to a constant rate taken from the stream header: frame j is at j / rate.

Frames are decoded with FFmpeg's automatic threading (frame and slice threads).
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np

from ..errors import InputError
from ..fileio import ffmpeg_reason, open_media
from ..memory import BufferPool
from ..timebase import FPS
from .timeline import nearest_source_frames, output_frame_count

_VIDEO_HINT = ("pass a video file (mp4, mov, mkv, webm, avi) or a photo (png, jpg, webp); convert other formats with "
               "e.g. `ffmpeg -i IN out.mp4`")
_CUT_OFF_HINT = "the file is incomplete (cut off while copying, downloading or recording): get a complete copy"
# Decoded frames kept for out-of-order reading (ping-pong): about this many bytes, but never fewer than 8 frames.
_CACHE_BYTES = 256 * 2**20
_MIN_CACHE_FRAMES = 8


@dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know about an input video (sizes are as displayed, after rotation)."""

    width: int
    height: int
    fps: float  # average source frame rate
    num_frames: int  # source frames (video packets in the container)
    duration: float  # seconds from the first frame's start to the last frame's end
    rotation: int  # clockwise degrees (0, 90, 180, 270) the stored pictures are turned for display
    has_audio: bool
    codec: str
    still: bool = False  # a single picture (png, jpg, webp, bmp, tiff...): one frame at any rate
    listed_frames: int | None = None  # frames the container's index lists, when more than can be decoded

    def frames_at(self, fps: float = FPS) -> int:
        """Exactly how many frames `read_frames(path, fps)` yields for this video (1 for a still picture)."""
        return 1 if self.still else output_frame_count(self.duration, fps)

    @property
    def truncated(self) -> bool:
        """The file ends before the frames its index lists (cut off while copying or recording): only the
        `num_frames` decodable ones are read."""
        return self.listed_frames is not None


@dataclass(frozen=True)
class _Timeline:
    """Presentation timing of a video stream's frames, in presentation order."""

    pts: np.ndarray | None  # sorted timestamps in the stream's time base; None when unusable (constant-rate fallback)
    times: np.ndarray  # seconds, relative to the first frame
    duration: float
    rate: float


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, rate, frame count, duration, rotation, audio presence and codec of a video file.

    Reads the container's packets once and decodes only the first picture. Raises InputError for a missing path,
    a directory, a file that is not a video (audio-only, text, damaged) and a video stream without decodable frames.
    """
    return _probe(path)[0]


def read_frames(
    path: str | os.PathLike,
    fps: float = FPS,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    cache_frames: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(index, frame)` for the video resampled to `fps`: RGB uint8 (H, W, 3), rotation applied.

    Output frame k (time k / fps) is the source frame with the nearest presentation time, ties to the earlier
    one; there are `probe_video(path).frames_at(fps)` output frames. `indices` selects output frames in any order,
    repeats allowed (e.g. `frame_schedule(...)`); by default all are yielded in order. Each yielded array belongs
    to the caller. Being a generator, it raises probe_video's InputErrors at the first `next`.

    Memory stays bounded: decoded frames live in an LRU cache of `cache_frames` frames (default: about 256 MiB
    worth, at least 8). A frame behind the decoder is reached by seeking to the keyframe before a block of
    `cache_frames` requested frames ending at it and decoding that block, so a backward pass costs about one
    group of pictures of extra decoding per block; files without usable timestamps restart from the beginning.
    """
    for k, frame in _shared_frames(path, fps, indices, cache_frames):
        yield k, frame.copy()


def read_batches(
    path: str | os.PathLike,
    size: int,
    fps: float = FPS,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    pool: BufferPool | None = None,
) -> Iterator[np.ndarray]:
    """The frames of `read_frames(path, fps, indices)` as (n, H, W, 3) arrays of `size` frames, in order (the last
    array may hold fewer).

    With a `pool` of (size, H, W, 3) uint8 arrays, each batch is decoded into an array taken from it (the last one
    into its first rows); give each batch back to the pool when done with it, and a long video reuses the same
    few arrays instead of allocating one per batch.
    """
    batch: np.ndarray | None = None
    filled = 0
    for _, frame in _shared_frames(path, fps, indices):
        if batch is None:
            batch = np.empty((size, *frame.shape), frame.dtype) if pool is None else pool.take()
            if batch.shape != (size, *frame.shape):
                raise ValueError(f"the pool holds {batch.shape} arrays, batches of {path} are {(size, *frame.shape)}")
        batch[filled] = frame
        filled += 1
        if filled == size:
            yield batch
            batch, filled = None, 0
    if batch is not None:
        yield batch[:filled]


def _shared_frames(
    path: str | os.PathLike, fps: float, indices: Sequence[int] | np.ndarray | None, cache_frames: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """`read_frames` without the copy: each frame is the decoder cache's own picture, valid until the next one."""
    info, timeline = _probe(path)
    count = info.frames_at(fps)
    source = nearest_source_frames(timeline.times, count, fps)
    order = np.arange(count) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    if order.size and (order.min() < 0 or order.max() >= count):
        bad = int(order[(order < 0) | (order >= count)][0])
        raise ValueError(f"frame index {bad} is outside the {count} frames of {path} at {fps} fps")
    capacity = cache_frames or max(_MIN_CACHE_FRAMES, _CACHE_BYTES // (info.width * info.height * 3))
    store = _FrameStore(Path(path), timeline, info.rotation, np.unique(source[order]), capacity)
    try:
        for k in order:
            yield int(k), store.get(int(source[k]))
    finally:
        store.close()


def _probe(path: str | os.PathLike) -> tuple[VideoInfo, _Timeline]:
    container, stream = _open_video(path)
    with container:
        timeline, first, packets = _scan(Path(path), container, stream)
        still = _is_image_format(container.format.name) and packets == 1
        listed = stream.frames  # from the index (mp4, mov); 0 where the container keeps none (mkv, webm)
        if listed > packets:  # the file ends early: find what really decodes
            timeline = _decodable_timeline(Path(path), listed)
        rotation = _rotation(first, stream)
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        info = VideoInfo(
            width=width,
            height=height,
            fps=timeline.rate,
            num_frames=len(timeline.times),
            duration=timeline.duration,
            rotation=rotation,
            has_audio=bool(container.streams.audio),
            codec=stream.codec_context.name,
            still=still,
            listed_frames=listed if listed > len(timeline.times) else None,
        )
    return info, timeline


def _open_video(path: str | os.PathLike) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open `path` and pick its first real video stream (cover art in audio files does not count)."""
    container = open_media(path, "video", _VIDEO_HINT)
    stream = next((s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic), None)
    if stream is None:
        container.close()
        raise InputError(f"{path} has no video stream", _VIDEO_HINT)
    stream.thread_type = "AUTO"
    return container, stream


def _is_image_format(name: str) -> bool:
    """FFmpeg's demuxers for single pictures: image2 (by extension) and the probed *_pipe ones (png_pipe, ...)."""
    return name == "image2" or name.endswith("_pipe")


def _scan(path: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream):
    """Demux every packet of `stream` for its timing, decoding only up to the first picture.

    Returns the `_Timeline`, that first picture (it proves the stream decodes and carries the display matrix) and
    the number of packets.
    """
    pts: list[int | None] = []
    durations: list[int] = []
    first: av.VideoFrame | None = None
    try:
        for packet in container.demux(stream):
            if first is None:  # the final empty packet flushes the decoder, so short or delayed streams work too
                first = next(iter(_decode(packet)), None)
            if packet.size:
                pts.append(packet.pts)
                durations.append(packet.duration or 0)
    except av.FFmpegError as exc:  # a damaged container
        raise InputError(f"cannot read the video in {path}: {ffmpeg_reason(exc)}", _VIDEO_HINT) from exc
    if first is None:
        listed = f" of the {stream.frames} its index lists (the file looks cut off)" if stream.frames > len(pts) else ""
        raise InputError(f"the video stream of {path} holds no decodable frames{listed}",
                         _CUT_OFF_HINT if listed else _VIDEO_HINT)
    return _timeline(stream, pts, durations), first, len(pts)


def _decodable_timeline(path: Path, listed: int) -> _Timeline:
    """The timeline of the frames that really decode, for a file that ends before its index does.

    Decodes the whole stream once: only files that are found truncated pay for it.
    """
    container, stream = _open_video(path)
    pts: list[int | None] = []
    durations: list[int] = []
    with container:
        try:
            for packet in container.demux(stream):
                for frame in _decode(packet):
                    pts.append(frame.pts)
                    durations.append(frame.duration or 0)
        except av.FFmpegError:
            pass  # the damaged end: what decoded so far is what there is
        if not pts:
            raise InputError(f"the video stream of {path} holds no decodable frames of the {listed} its index lists "
                             "(the file looks cut off)", _CUT_OFF_HINT)
        return _timeline(stream, pts, durations)  # while open: the stream's time base is gone after closing


def _decode(packet: av.Packet) -> list[av.VideoFrame]:
    """The frames a packet completes; a damaged packet yields none (like FFmpeg's tools, decoding goes on)."""
    try:
        return packet.decode()
    except av.error.InvalidDataError:
        return []


def _timeline(stream: av.video.stream.VideoStream, pts: list[int | None], durations: list[int]) -> _Timeline:
    """Frame times from packet timestamps, or from the header's frame rate when those are unusable."""
    usable = all(p is not None for p in pts) and len(set(pts)) == len(pts)
    if not usable:
        rate = _fallback_rate(stream, durations)
        return _Timeline(None, np.arange(len(pts)) / rate, len(pts) / rate, rate)
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    sorted_pts = np.asarray(pts, dtype=np.int64)[order]
    tb = float(stream.time_base)
    last_duration = durations[order[-1]]
    if last_duration <= 0:  # not stored by some muxers: assume the typical frame step
        steps = np.diff(sorted_pts)
        last_duration = float(np.median(steps)) if steps.size else 1 / (_fallback_rate(stream, durations) * tb)
    duration = float(sorted_pts[-1] - sorted_pts[0] + last_duration) * tb
    return _Timeline(sorted_pts, (sorted_pts - sorted_pts[0]) * tb, duration, len(pts) / duration)


def _fallback_rate(stream: av.video.stream.VideoStream, durations: list[int]) -> float:
    """Frame rate for streams without usable timestamps: the typical packet duration, else the header's rate.

    Packet durations come first because files with broken timestamps often carry a broken average rate too.
    """
    positive = [d for d in durations if d > 0]
    if positive and stream.time_base:
        return float(1 / (Fraction(float(np.median(positive))) * stream.time_base))
    return float(stream.guessed_rate or stream.average_rate or stream.base_rate or 25)


def _rotation(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    """Clockwise degrees (0, 90, 180, 270) to turn the stored pictures for display.

    The display matrix (which FFmpeg attaches to decoded frames) wins; the legacy `rotate` tag is the fallback.
    Flips in the matrix are ignored.
    """
    clockwise = -float(frame.rotation)  # PyAV reports the matrix as a counter-clockwise angle
    if not clockwise:
        tag = next((v for k, v in stream.metadata.items() if k.lower() == "rotate"), "0")  # mkv tags are upper case
        try:
            clockwise = float(tag)
        except ValueError:
            clockwise = 0.0
    return int(round(clockwise / 90)) % 4 * 90


def rotate_frame(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn an (H, W, C) picture clockwise by `rotation` degrees (a multiple of 90)."""
    if rotation % 360 == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-(rotation // 90)))


class _FrameStore:
    """Source frames by presentation-order number, decoded on demand and kept in a bounded LRU cache.

    Only `wanted` frames (those the caller will ask for) are converted to RGB and cached; the others are decoded
    and dropped. `decoded` and `peak_cached` record the work done and the memory held.
    """

    def __init__(self, path: Path, timeline: _Timeline, rotation: int, wanted: np.ndarray, capacity: int):
        self._path = path
        self._timeline = timeline
        self._rotation = rotation
        self._wanted = wanted  # sorted, unique
        self._is_wanted = np.zeros(len(timeline.times), dtype=bool)
        self._is_wanted[wanted] = True
        self._capacity = capacity
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._container: av.container.InputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._frames: Iterator[tuple[int, av.VideoFrame]] | None = None  # the current decoding run
        self._next = 0  # number of the frame the current run yields next
        self._keep_from = 0  # the current run caches wanted frames from this number on
        self.decoded = 0
        self.peak_cached = 0

    def get(self, number: int) -> np.ndarray:
        """The RGB picture of source frame `number` (shared with the cache: copy before changing it)."""
        image = self._cache.get(number)
        if image is not None:
            self._cache.move_to_end(number)
            return image
        if number < self._next:  # behind the decoder: fetch a whole block ending here, for backward reading
            pos = int(np.searchsorted(self._wanted, number))
            self._start_run(int(self._wanted[max(0, pos - self._capacity + 1)]))
        elif self._frames is None:
            self._start_run(number)
        return self._decode_until(number)

    def close(self) -> None:
        self._close_decoder()
        self._cache.clear()

    def _decode_until(self, number: int) -> np.ndarray:
        """Run the decoder up to frame `number`; a frame the decoder skipped is replaced by its predecessor."""
        previous: tuple[int, av.VideoFrame] | None = None
        for got, frame in self._frames:
            self._next = got + 1
            if got >= number:
                if got > number and self._is_wanted[got]:  # overshot: keep the frame we did get, it is wanted too
                    self._put(got, frame)
                return self._put(number, previous[1] if got > number and previous is not None else frame)
            if got >= self._keep_from and self._is_wanted[got]:
                self._put(got, frame)
            previous = (got, frame)
        self._frames = None  # end of stream before `number`: the decoder produced fewer frames than packets
        if previous is None:
            raise InputError(f"cannot decode frame {number} of {self._path}", _VIDEO_HINT)
        return self._put(number, previous[1])

    def _put(self, number: int, frame: av.VideoFrame) -> np.ndarray:
        image = rotate_frame(frame.to_ndarray(format="rgb24"), self._rotation)
        self._cache[number] = image
        self._cache.move_to_end(number)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        self.peak_cached = max(self.peak_cached, len(self._cache))
        return image

    def _start_run(self, start: int) -> None:
        """Position the decoder so that its next frames include frame `start`: seek if possible, else restart."""
        self._keep_from = start
        pts = self._timeline.pts
        if pts is not None and self._container is not None and start > 0:
            try:
                self._container.seek(int(pts[start]), stream=self._stream)  # lands on the keyframe at or before it
                run = self._decoded_frames()
                head = next(run, None)
                if head is not None and head[1].pts is not None and head[0] <= start:  # numbered by timestamp
                    self._frames = itertools.chain([head], run)
                    return
            except av.FFmpegError:
                pass  # not seekable: decode from the beginning instead
        self._close_decoder()
        self._container, self._stream = _open_video(self._path)
        self._frames = self._decoded_frames()

    def _close_decoder(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container = None
        self._frames = None

    def _decoded_frames(self) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decode from the container's position, numbering frames in presentation order.

        Numbers come from timestamps when they are usable (so they are right after a seek), else by counting;
        they always increase, which guards against repeated timestamps.
        """
        pts = self._timeline.pts
        last = -1
        for packet in self._container.demux(self._stream):
            for frame in _decode(packet):
                self.decoded += 1
                number = last + 1
                if pts is not None and frame.pts is not None:
                    number = max(number, int(np.searchsorted(pts, frame.pts)))
                if number >= len(self._is_wanted):
                    return
                last = number
                yield number, frame
