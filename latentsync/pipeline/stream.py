"""Running a whole video through the pipeline with bounded memory.

Two passes over the video, neither holding it in memory:
  1. faces: decode at 25 fps, detect and track the face; keeps a few numbers per frame (the FaceTrack).
  2. lip sync: decode again following the output schedule (cut or ping-pong), 16 frames at a time:
     align (background thread) -> denoise (this thread, the model) -> paste back and encode (background thread).
Queues between the stages hold at most two chunks, so memory is flat however long the video is.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio import SAMPLE_RATE, load_audio
from ..errors import InputError, NoFaceError
from ..face import FaceAligner, FaceSelection, FaceTrack, track_faces
from ..memory import return_large_buffers_to_os
from ..media import FPS, VideoWriter, check_output_path, frame_schedule, probe_video, read_frames
from .lipsync import CHUNK_FRAMES, LipSyncPipeline

log = logging.getLogger("latentsync")


@dataclass
class RunOptions:
    """What a user can tune for one job (the command line maps onto these one to one)."""

    num_inference_steps: int = 20
    guidance_scale: float = 1.5
    seed: int | None = None  # None: a random seed, reported in the summary
    segmenting: str = "seamless"  # Whisper segmentation: "seamless" or "reference" (published)
    selection: FaceSelection = field(default_factory=FaceSelection)
    track: str | os.PathLike | FaceTrack | None = None  # reuse a saved face track instead of detecting
    save_track: str | os.PathLike | None = None
    progress: bool = True
    crf: int = 18


@dataclass
class Job:
    """Validated inputs of one run (checked before any model work)."""

    video: Path
    wav: np.ndarray
    width: int
    height: int
    num_video_frames: int  # at 25 fps
    num_output_frames: int
    output: Path | None


@dataclass
class RunReport:
    """What happened: sizes, face statistics and seconds per stage."""

    output: Path | None = None
    seed: int = 0
    video_frames: int = 0
    output_frames: int = 0
    output_seconds: float = 0.0
    faces_found: int = 0
    faces_interpolated: int = 0
    faces_absent: int = 0
    face_backend: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of the phases, one after the other
    busy: dict[str, float] = field(default_factory=dict)  # time spent in each concurrent lip-sync stage

    def summary(self) -> str:
        total = sum(self.seconds.values())
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.busy.items())
        return (
            f"{self.output_frames} frames ({self.output_seconds:.2f} s) from {self.video_frames} video frames; "
            f"faces: {self.faces_found} found, {self.faces_interpolated} bridged, {self.faces_absent} passed through "
            f"({self.face_backend}); seed {self.seed}; {total:.1f} s total ({phases}; lip-sync stages busy: {stages})"
            + (f"; wrote {self.output}" if self.output else "")
        )


def prepare_job(video: str | os.PathLike, audio: str | os.PathLike, output: str | os.PathLike | None) -> Job:
    """Check every input and the output location; raise a clear InputError before anything expensive."""
    if audio is None:
        raise InputError("no speech track given", "pass --audio with the speech the video should say")
    info = probe_video(video)
    if output is not None:
        check_output_path(output, video, audio)
    wav = load_audio(audio)
    num_output_frames = int(len(wav) * FPS // SAMPLE_RATE)
    if num_output_frames == 0:
        raise InputError(f"the speech track {audio} is shorter than one video frame (40 ms)", "pass a longer audio file")
    return Job(
        Path(video), wav, info.width, info.height, info.frames_at(FPS), num_output_frames, Path(output) if output else None
    )


def run_job(
    pipe: LipSyncPipeline,
    video: str | os.PathLike,
    audio: str | os.PathLike,
    output: str | os.PathLike | None,
    options: RunOptions,
) -> Path | np.ndarray:
    if pipe.audio_encoder is None or (pipe.face_detector is None and options.track is None):
        raise ValueError("whole-video runs need the pipeline's audio_encoder and face_detector (see from_pretrained)")
    job = prepare_job(video, audio, output)
    return_large_buffers_to_os()
    report = RunReport(output=job.output, output_frames=job.num_output_frames, output_seconds=job.num_output_frames / FPS)
    timer, busy = _StageTimer(report.seconds), _StageTimer(report.busy)

    with timer("audio"):
        features = pipe.audio_encoder.features(job.wav, segmenting=options.segmenting)
    with timer("faces"):
        track = _face_track(pipe, job, options)
    report.video_frames = track.num_frames
    report.faces_found = int((track.present & ~track.interpolated).sum())
    report.faces_interpolated = int(track.interpolated.sum())
    report.faces_absent = int((~track.present).sum())
    report.face_backend = track.backend

    aligner = FaceAligner(pipe.resolution, device=pipe.device)
    matrices = video_matrices(aligner, track)
    schedule = frame_schedule(track.num_frames, job.num_output_frames)
    report.seed = options.seed if options.seed is not None else int(torch.seed() % 2**31)
    latent_size = pipe.resolution // 8
    generator = torch.Generator().manual_seed(report.seed)
    init_latents = torch.randn((1, 4, 1, latent_size, latent_size), generator=generator)

    def prepare(chunk: tuple[int, np.ndarray]) -> dict[str, Any]:
        start, frames = chunk
        with busy("align"):
            idx = schedule[start : start + len(frames)]
            present = track.present[idx]
            crops = aligner.warp(frames[present], matrices[idx[present]]) if present.any() else None
            windows = pipe.audio_encoder.windows(features, len(frames), start=start)[present]
        return {"frames": frames, "idx": idx, "present": present, "crops": crops, "windows": windows}

    def finish(item: dict[str, Any]) -> None:
        frames, present = item["frames"], item["present"]
        with busy("paste+encode"):
            if item.get("faces") is not None:
                frames[present] = aligner.paste(frames[present], item["faces"], matrices[item["idx"][present]])
            sink.write(frames)
        bar.update(len(frames))

    frames_in = busy.iterate("decode", read_frames(job.video, fps=FPS, indices=schedule))
    bar = tqdm(total=job.num_output_frames, unit="frame", desc="lip-sync", disable=not options.progress)
    collected: list[np.ndarray] = []
    with _sink(job, collected, options) as sink, timer("lip-sync"):
        with _Background(finish) as writer:
            for item in _prefetch(map(prepare, _chunks(frames_in, CHUNK_FRAMES)), depth=2):
                if item["crops"] is not None:
                    faces = torch.from_numpy(np.ascontiguousarray(item["crops"].transpose(0, 3, 1, 2)))
                    with busy("diffusion"):
                        item["faces"] = pipe.sample_chunk(
                            faces, item["windows"], init_latents, options.num_inference_steps, options.guidance_scale
                        ).cpu()
                writer.submit(item)
    bar.close()
    pipe.last_report = report
    if options.progress:
        log.info(report.summary())
    return job.output if job.output is not None else np.concatenate(collected)


def _face_track(pipe: LipSyncPipeline, job: Job, options: RunOptions) -> FaceTrack:
    if options.track is not None:
        track = options.track if isinstance(options.track, FaceTrack) else FaceTrack.load(options.track)
    else:
        frames = (frame for _, frame in read_frames(job.video, fps=FPS))
        track = track_faces(frames, pipe.face_detector, options.selection, fps=FPS, progress=options.progress)
    track.check(job.width, job.height, job.num_video_frames)
    if options.save_track is not None:
        track.save(options.save_track)
    if not track.present.any():
        raise NoFaceError(
            f"no face found in any frame of {job.video}",
            "check the video shows a face, or try --face-backend insightface / mediapipe",
        )
    return track


def video_matrices(aligner: FaceAligner, track: FaceTrack) -> np.ndarray:
    """Affine matrices (N,2,3) per video frame; the published smoothing restarts after every absence (NaN there)."""
    matrices = np.full((track.num_frames, 2, 3), np.nan)
    present = np.concatenate([[False], track.present, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(present) == 1)
    ends = np.flatnonzero(np.diff(present) == -1)
    for s, e in zip(starts, ends):
        matrices[s:e] = aligner.matrices(track.points[s:e])
    return matrices


def _chunks(frames: Iterable[tuple[int, np.ndarray]], size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Group (index, frame) pairs into (first output index, (n,H,W,3) array) chunks."""
    batch: list[np.ndarray] = []
    start = 0
    for i, frame in frames:
        if not batch:
            start = i
        batch.append(frame)
        if len(batch) == size:
            yield start, np.stack(batch)
            batch = []
    if batch:
        yield start, np.stack(batch)


@contextmanager
def _sink(job: Job, collected: list[np.ndarray], options: RunOptions):
    """Where finished frames go: the output video (atomic, with the speech muxed in) or a list in memory."""
    if job.output is None:

        class _Collect:
            def write(self, frames: np.ndarray) -> None:
                collected.append(frames.copy())

        yield _Collect()
        return
    with VideoWriter(job.output, job.width, job.height, fps=FPS, audio=job.wav, crf=options.crf) as writer:
        yield writer


def _prefetch(items: Iterable[Any], depth: int) -> Iterator[Any]:
    """Iterate `items` in a background thread, at most `depth` ahead (CPU decoding overlaps model work)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(item)
            q.put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(exc)

    thread = threading.Thread(target=produce, name="latentsync-prepare", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


class _Background:
    """Run `fn(item)` for submitted items in one background thread, in order; errors surface on submit/exit."""

    def __init__(self, fn: Callable[[Any], None], depth: int = 2):
        self._fn = fn
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="latentsync-finish", daemon=True)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._fn(item)
                except BaseException as exc:
                    self._error = exc

    def submit(self, item: Any) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def __enter__(self) -> "_Background":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error


class _StageTimer:
    """Adds up seconds per named stage (each stage is timed by one thread only)."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def iterate(self, name: str, items: Iterable[Any]) -> Iterator[Any]:
        """Yield from `items`, counting the time spent producing each item."""
        iterator = iter(items)
        while True:
            with self(name):
                item = next(iterator, _END)
            if item is _END:
                return
            yield item


_END = object()
