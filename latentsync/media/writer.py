"""Writing the result: streaming H.264 encoding with the speech track muxed in, published atomically.

- Video: libx264, yuv420p, BT.709 limited range (converted and tagged, so players show the colours the reader
  decoded). 4:2:0 needs even sizes: an odd width or height is padded by repeating the last column or row, so
  the file is then one pixel wider or taller than the frames given.
- Audio: AAC. A numpy array is taken as 16 kHz mono float32 (`latentsync.audio.load_audio`'s output) and
  encoded at 16 kHz; a file path keeps its own sample rate (48 kHz if AAC has no such rate) and up to two
  channels. The track is encoded alongside the video, so the file is properly interleaved, and is cut or
  padded with silence to exactly `frames / fps` seconds: audio and video end together (exact in mp4/mov).
- Threading: `write` only queues frames (a bounded queue of about 256 MiB); a background thread converts,
  encodes and muxes them, so encoding overlaps the model's work. Errors from that thread surface at the next
  `write` or at `close`.
- Atomicity: the file is written to a hidden temporary file beside the target and renamed on success; when the
  `with` block raises (or encoding fails) the temporary file is deleted and no output appears.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from ..timebase import FPS, SAMPLE_RATE
from ..errors import InputError
from ..fileio import atomic_path, open_media
from ..memory import BufferPool

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv")
_QUEUE_BYTES = 256 * 2**20
_STOP = object()  # queue sentinel: no more frames


def check_output_path(out_path: str | os.PathLike, *inputs: str | os.PathLike) -> Path:
    """Fail early, with a hint, when `out_path` cannot receive the result; returns it as an absolute path.

    Checks the extension (.mp4, .mov, .mkv), that it is not a directory, that it is none of `inputs` (also via
    other spellings, symlinks or hard links), and that its folder exists and is writable or can be created.
    Touches nothing on disk.
    """
    out = Path(os.path.abspath(Path(out_path).expanduser()))
    if out.is_dir():
        inside = "choose another name: a folder already has this one" if out.suffix.lower() in VIDEO_EXTENSIONS \
            else f"name a file inside it, e.g. {Path(out_path) / 'result.mp4'}"
        raise InputError(f"the output path {out_path} is a directory", inside)
    if out.suffix.lower() not in VIDEO_EXTENSIONS:
        raise InputError(
            f"cannot write {out.name!r}: the output must be a video file ({', '.join(VIDEO_EXTENSIONS)})",
            f"name the output e.g. {out.stem or 'result'}.mp4",
        )
    for given in inputs:
        if _same_file(out, Path(given).expanduser()):
            raise InputError(
                f"the output is the same file as the input {given}",
                "choose another output name: inputs are never overwritten",
            )
    existing = out.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"cannot create the output folder {out.parent}: {existing} is a file", "choose another folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise InputError(f"the output folder {existing} is not writable ({exc.strerror})", "choose a folder you can write to") from exc
    return out


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


class VideoWriter:
    """Stream RGB frames into an H.264 file with an AAC speech track; use as a context manager.

    `width`/`height` are those of the frames given to `write`; `audio` is a 16 kHz mono float32 array, a path to
    any media file with an audio track, or None for a silent video.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        width: int,
        height: int,
        fps: float = FPS,
        audio: np.ndarray | str | os.PathLike | None = None,
        crf: int = 18,
        preset: str = "medium",
    ):
        self.path = Path(path)
        self.width, self.height = width, height
        self.fps = Fraction(fps).limit_denominator(1001)  # 29.97 -> 30000/1001
        self.frames_written = 0
        self._error: BaseException | None = None
        self._closed = False
        self._audio: _AudioTrack | None = None
        self._container: av.container.OutputContainer | None = None
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        try:
            self._audio = _AudioTrack(audio) if audio is not None else None
            self._container = self._open(crf, preset)
        except BaseException as exc:
            self._discard(exc)
            raise
        self._audio_done = 0  # samples encoded so far
        self._queue: queue.Queue = queue.Queue(maxsize=max(2, min(64, _QUEUE_BYTES // (width * height * 3))))
        # Frames wait in the queue in buffers of the encoded (even) size, reused: one per queue slot and thread.
        self._buffers = BufferPool((height + height % 2, width + width % 2, 3))
        self._thread = threading.Thread(target=self._encode_loop, name="VideoWriter", daemon=True)
        self._thread.start()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self._abort(exc)

    def write(self, frames: np.ndarray) -> None:
        """Queue one (H, W, 3) or several (N, H, W, 3) uint8 RGB frames for encoding. They are copied: the caller
        may reuse its array as soon as this returns."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3):
            raise ValueError(
                f"expected uint8 frames of shape (N, {self.height}, {self.width}, 3), got {frames.dtype} {frames.shape}"
            )
        for frame in frames:
            self._put(self._padded_copy(frame))
            self.frames_written += 1

    def close(self) -> None:
        """Finish encoding, complete the audio track and move the file into place."""
        if self._closed:
            return
        self._put(_STOP)
        self._thread.join()
        try:
            if self._error is not None:
                raise self._error
            if self.frames_written == 0:
                raise ValueError(f"no frames were written to {self.path}")
            self._finish()
        except BaseException as exc:
            self._abort(exc)
            raise
        self._closed = True
        self._atomic.__exit__(None, None, None)

    def _padded_copy(self, frame: np.ndarray) -> np.ndarray:
        """The frame in a buffer of the pool, an odd last row or column repeated to reach even sizes."""
        buffer = self._buffers.take()
        height, width = frame.shape[:2]
        buffer[:height, :width] = frame
        buffer[height:, :width] = frame[-1:]
        buffer[:, width:] = buffer[:, width - 1 : width]
        return buffer

    def _open(self, crf: int, preset: str) -> av.container.OutputContainer:
        options = {"movflags": "+faststart"} if self.path.suffix.lower() in (".mp4", ".mov") else {}
        container = av.open(str(self._tmp), "w", options=options)
        try:
            video = container.add_stream("libx264", rate=self.fps, options={"crf": str(crf), "preset": preset})
            video.width, video.height = self.width + self.width % 2, self.height + self.height % 2
            video.pix_fmt = "yuv420p"
            codec = video.codec_context
            codec.colorspace, codec.color_primaries, codec.color_trc = 1, 1, 1  # BT.709
            codec.color_range = 1  # limited ("tv") range
            if self._audio is not None:
                container.add_stream("aac", rate=self._audio.rate, layout=self._audio.layout)
        except BaseException:
            container.close()
            raise
        return container

    def _put(self, item) -> None:
        """Queue an item without blocking forever when the encoding thread has died."""
        while True:
            if self._error is not None or not self._thread.is_alive():
                if item is _STOP:
                    return
                raise RuntimeError(f"encoding {self.path} failed") from self._error
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _encode_loop(self) -> None:
        """Background thread: convert, encode and mux queued frames, with the audio that goes with them."""
        try:
            video = self._container.streams.video[0]
            index = 0
            while (frame := self._queue.get()) is not _STOP:
                # Converted straight from the buffer (no copy into an RGB picture), which is then free again.
                picture = av.VideoFrame.from_numpy_buffer(frame, format="rgb24").reformat(
                    format="yuv420p", dst_colorspace="itu709", dst_color_range="MPEG"
                )
                self._buffers.give(frame)
                picture.pts = index
                picture.time_base = 1 / self.fps
                self._container.mux(video.encode(picture))
                index += 1
                self._encode_audio(index / self.fps, last=False)
        except BaseException as exc:  # handed to the caller's thread
            self._error = exc

    def _finish(self) -> None:
        """Flush the video encoder, complete the audio to the video's length, and close the container."""
        self._container.mux(self._container.streams.video[0].encode())
        self._encode_audio(self.frames_written / self.fps, last=True)
        self._container.close()

    def _encode_audio(self, until: Fraction, last: bool) -> None:
        """Encode the audio up to `until` seconds: whole AAC frames only, unless this is the end of the track."""
        if self._audio is None:
            return
        stream = self._container.streams.audio[0]
        size = stream.codec_context.frame_size or 1024
        target = round(until * self._audio.rate)
        while target - self._audio_done >= size or (last and target > self._audio_done):
            count = min(size, target - self._audio_done)
            frame = av.AudioFrame.from_ndarray(self._audio.take(count), format="fltp", layout=self._audio.layout)
            frame.sample_rate = self._audio.rate
            frame.pts = self._audio_done
            frame.time_base = Fraction(1, self._audio.rate)
            self._container.mux(stream.encode(frame))
            self._audio_done += count
        if last:
            self._container.mux(stream.encode())
            self._audio.close()

    def _abort(self, exc: BaseException) -> None:
        """Stop encoding and delete the temporary file."""
        if self._closed:
            return
        self._closed = True
        self._put(_STOP)
        self._thread.join()
        self._discard(exc)

    def _discard(self, exc: BaseException) -> None:
        try:
            if self._container is not None:
                self._container.close()
        except av.FFmpegError:
            pass  # the file is being thrown away
        if self._audio is not None:
            self._audio.close()
        self._atomic.__exit__(type(exc), exc, exc.__traceback__)


class _AudioTrack:
    """A speech track as float planar samples at its own rate, taken in pieces of any size."""

    def __init__(self, audio: np.ndarray | str | os.PathLike):
        self._container: av.container.InputContainer | None = None
        if isinstance(audio, np.ndarray):
            if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
                raise ValueError(f"expected 16 kHz mono float samples of shape (N,), got {audio.dtype} {audio.shape}")
            self.rate, self.layout = SAMPLE_RATE, "mono"
            self._chunks: Iterator[np.ndarray] = iter([audio.astype(np.float32)[None]])
        else:
            self._chunks = self._decode(Path(audio))
        self._buffer = np.zeros((self.channels, 0), dtype=np.float32)

    @property
    def channels(self) -> int:
        return 1 if self.layout == "mono" else 2

    def take(self, count: int) -> np.ndarray:
        """The next `count` samples as (channels, count) float32, silence past the end of the track."""
        while self._buffer.shape[1] < count:
            chunk = next(self._chunks, None)
            if chunk is None:
                pad = np.zeros((self.channels, count - self._buffer.shape[1]), dtype=np.float32)
                self._buffer = np.concatenate([self._buffer, pad], axis=1)
                break
            self._buffer = np.concatenate([self._buffer, chunk], axis=1)
        out, self._buffer = self._buffer[:, :count], self._buffer[:, count:]
        return np.ascontiguousarray(out)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _decode(self, path: Path) -> Iterator[np.ndarray]:
        """Open the file now (so that a bad path fails at once) and decode it lazily, as the video is written."""
        self._container = open_media(path, "audio", "convert it to WAV, e.g. `ffmpeg -i IN out.wav`")
        if not self._container.streams.audio:
            self.close()
            raise InputError(f"{path} has no audio track", "pass a file with a speech track")
        stream = self._container.streams.audio[0]
        supported = av.Codec("aac", "w").audio_rates
        self.rate = stream.rate if stream.rate in supported else 48000
        self.layout = "mono" if stream.channels == 1 else "stereo"
        return self._resampled(stream)

    def _resampled(self, stream: av.audio.stream.AudioStream) -> Iterator[np.ndarray]:
        resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        for frame in self._container.decode(stream):
            for out in resampler.resample(frame):
                yield out.to_ndarray()
        for out in resampler.resample(None):  # the resampler's delay line
            yield out.to_ndarray()
