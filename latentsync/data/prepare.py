"""`latentsync prepare`: raw talking-head videos -> aligned R x R face clips for training, and a file list.

Per input video: decode at 25 fps and 16 kHz, follow the largest face through it, and cut the frames where the
face is continuously present into clips (a run longer than `max_seconds` is split into equal parts, parts shorter
than `min_seconds` are dropped). Each clip is aligned to the published template (SPEC 5; the temporal smoothing
restarts at every run), written as H.264 at 25 fps with its 16 kHz speech muxed in as AAC, under
`OUTPUT_DIR/<input path without suffix>/<first>-<last frame>.mp4`.

Resumable: every file appears atomically; the face track of a video is kept beside its clips (`track.npz`), a
video whose clips are all written gets a `done.json` marker and is skipped next time, and a half-done video
only writes its missing clips. A video that cannot be read is skipped with its reason logged and reported.
Not done here (SPEC 11): shot-cut detection, the SyncNet offset/confidence filter and the quality filter.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

from ..audio import SAMPLE_RATE, load_audio
from ..errors import InputError, LatentSyncError
from ..face import FaceAligner, FaceDetector, FaceTrack, create_detector, detect_video_track, load_video_track, track_matrices
from ..fileio import atomic_path
from ..media import FPS, VideoInfo, VideoWriter, probe_video, read_batches

log = logging.getLogger(__name__)

SAMPLES_PER_FRAME = round(SAMPLE_RATE / FPS)  # 640
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
SETTINGS_FILE = "prepare.json"  # the settings an output folder was made with
FILESLIST = "fileslist.txt"
DONE_MARKER = "done.json"
TRACK_FILE = "track.npz"
WARP_CHUNK = 32  # frames aligned per call


@dataclass(frozen=True)
class PrepareSettings:
    """What the clips depend on; an output folder keeps one set of settings."""

    resolution: int = 256
    min_seconds: float = 2.0
    max_seconds: float = 10.0
    face_backend: str = "auto"

    def check(self) -> None:
        if self.resolution < 64 or self.resolution % 2:
            raise InputError(f"resolution must be an even number >= 64, got {self.resolution}", "use 256 or 512")
        min_frames, max_frames = self.clip_frames()
        if not (self.min_seconds > 0 and 1 <= min_frames <= max_frames):
            raise InputError(
                f"need 0 < min seconds <= max seconds, with room for a clip at {FPS:g} fps between them; "
                f"got {self.min_seconds} and {self.max_seconds}",
                "the published pipeline keeps 5-10 s segments; the U-Net trains on clips of at least 1.92 s "
                "(48 frames), SyncNet on clips of at least 1.28 s (32 frames)",
            )

    def clip_frames(self) -> tuple[int, int]:
        """(fewest, most) frames of a clip: whole frames within min_seconds .. max_seconds."""
        return math.ceil(self.min_seconds * FPS), int(self.max_seconds * FPS)


@dataclass
class PrepareReport:
    """What a run did: the clips of every input video (new or already there) and the videos skipped, with why."""

    clips: list[Path] = field(default_factory=list)
    written: int = 0  # clips encoded by this run
    reused_videos: int = 0  # videos finished by an earlier run
    skipped: dict[str, str] = field(default_factory=dict)  # input video -> reason
    fileslist: Path | None = None


def list_videos(input_dir: Path, output_dir: Path) -> list[Path]:
    """Every video file under `input_dir`, sorted, leaving out our own output when it lies inside."""
    if not input_dir.is_dir():
        raise InputError(f"input folder not found: {input_dir}", "pass a folder of talking-head videos")
    output = output_dir.resolve()
    return sorted(
        p for p in input_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.resolve().is_relative_to(output)
    )


def clip_spans(present: np.ndarray, min_frames: int, max_frames: int) -> list[tuple[int, int]]:
    """(start, end) frame ranges (end exclusive) of continuous face presence, split into equal parts of at most
    `max_frames`, keeping those of at least `min_frames`."""
    edges = np.diff(np.concatenate([[0], present.astype(np.int8), [0]]))
    spans = []
    for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
        parts = math.ceil((end - start) / max_frames)
        bounds = np.linspace(start, end, parts + 1).round().astype(int)
        spans += [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= min_frames]
    return spans


def prepare_dataset(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    settings: PrepareSettings = PrepareSettings(),
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    detector: FaceDetector | None = None,
) -> PrepareReport:
    """Turn every video under `input_dir` into aligned clips under `output_dir` and write `fileslist.txt`.

    `detector`: a ready face detector (default: `create_detector(settings.face_backend, checkpoint_dir, device)`).
    Re-running on the same folders only does the work that is missing.
    """
    settings.check()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    videos = list_videos(input_dir, output_dir)
    if not videos:
        raise InputError(f"no videos found under {input_dir}", f"expected files ending in {', '.join(VIDEO_SUFFIXES)}")
    claimed = _settings_match(output_dir, settings)
    own_detector = detector is None
    detector = detector or create_detector(settings.face_backend, checkpoint_dir, device)
    try:
        if not claimed:  # only once the detector works: a failed start leaves no settings file behind
            with atomic_path(output_dir / SETTINGS_FILE) as tmp:
                tmp.write_text(json.dumps(asdict(settings), indent=1))
        report = _prepare_all(videos, input_dir, output_dir, settings, detector, FaceAligner(settings.resolution, device))
    finally:
        if own_detector:
            detector.close()
    log.info(
        "%d clips (%d new) from %d videos; %d videos skipped; list: %s",
        len(report.clips), report.written, len(videos) - len(report.skipped), len(report.skipped), report.fileslist,
    )
    return report


def _prepare_all(
    videos: list[Path], input_dir: Path, output_dir: Path, settings: PrepareSettings, detector: FaceDetector,
    aligner: FaceAligner,
) -> PrepareReport:
    """Each video in turn (finished ones only listed), then the file list of all their clips."""
    report = PrepareReport()
    for number, video in enumerate(videos, 1):
        folder = output_dir / video.relative_to(input_dir).with_suffix("")
        marker = folder / DONE_MARKER
        if marker.exists():
            report.clips += [folder / name for name in json.loads(marker.read_text())["clips"]]
            report.reused_videos += 1
            continue
        log.info("[%d/%d] %s", number, len(videos), video)
        try:
            clips, written = _prepare_video(video, folder, settings, detector, aligner)
        except (LatentSyncError, av.FFmpegError) as exc:  # a damaged file may fail only while decoding
            reason = exc.message if isinstance(exc, LatentSyncError) else f"decoding failed: {exc}"
            report.skipped[str(video)] = reason
            log.warning("skipping %s: %s", video, reason)
            continue
        report.clips += clips
        report.written += written
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps({"source": str(video), "clips": [c.name for c in clips]}, indent=1))
    report.fileslist = output_dir / FILESLIST
    with atomic_path(report.fileslist) as tmp:
        tmp.write_text("".join(f"{c.relative_to(output_dir).as_posix()}\n" for c in report.clips))
    return report


def _settings_match(output_dir: Path, settings: PrepareSettings) -> bool:
    """Whether the output folder was already made with these settings (False: a new folder); InputError when it
    was made with others."""
    path = output_dir / SETTINGS_FILE
    if not path.exists():
        return False
    previous = json.loads(path.read_text())
    if previous != asdict(settings):
        raise InputError(
            f"{output_dir} was prepared with other settings ({previous})",
            "use a new output folder, or the same --resolution / --min-seconds / --max-seconds / --face-backend",
        )
    return True


def _prepare_video(
    video: Path, folder: Path, settings: PrepareSettings, detector: FaceDetector, aligner: FaceAligner
) -> tuple[list[Path], int]:
    """Clips of one video (all of them, and how many were written now); raises LatentSyncError for a bad input."""
    info = probe_video(video)
    if not info.has_audio:
        raise InputError("no audio track", "training needs the speaker's own speech")
    audio = load_audio(video)
    track = _face_track(video, info, folder, detector)
    spans = clip_spans(track.present, *settings.clip_frames())
    if not spans:
        log.info("  no face run of at least %.1f s (%s)", settings.min_seconds, track.summary())
    clips = [folder / f"{start:06d}-{end - 1:06d}.mp4" for start, end in spans]
    todo = [(span, clip) for span, clip in zip(spans, clips) if not clip.exists()]
    for (start, end), clip in todo:
        mats = track_matrices(aligner, track, start, end)
        speech = audio[start * SAMPLES_PER_FRAME : end * SAMPLES_PER_FRAME]
        size = settings.resolution
        with VideoWriter(clip, size, size, fps=FPS, audio=speech) as writer:
            done = 0
            for frames in read_batches(video, WARP_CHUNK, FPS, np.arange(start, end)):
                writer.write(aligner.warp(frames, mats[done : done + len(frames)]))
                done += len(frames)
    return clips, len(todo)


def _face_track(video: Path, info: VideoInfo, folder: Path, detector: FaceDetector) -> FaceTrack:
    """The video's face track, read back if an interrupted run saved it for this very video, else detected and saved."""
    path = folder / TRACK_FILE
    if path.exists():
        try:
            return load_video_track(path, info)
        except InputError as exc:  # the input video was replaced since
            log.info("  the saved face track no longer fits the video (%s): detecting faces again", exc.message)
    track = detect_video_track(video, detector)
    track.save(path)
    return track
