"""Submitted media and options, checked before a job is queued (the API and the web page share these checks).

Uploaded files are stored under fixed names (`video`, `audio` plus a known suffix): the names users send are
only shown, never used as paths. Sizes and durations are limited; the media checks are `check_inputs`, the
option ranges `RunOptions.check`, the same as on the command line.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InputError, LatentSyncError
from ..face.track import FaceSelection
from ..pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS, RunOptions, check_inputs
from ..pipeline.job import ProgressCallback
from ..timebase import SAMPLE_RATE

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg", ".opus", ".webm", ".mp4")
_CHUNK = 1 << 20


class TooLarge(InputError):
    """An upload over the server's size limit (HTTP 413)."""


@dataclass(frozen=True)
class Limits:
    """What a server accepts: bytes per uploaded file, seconds of video and of speech."""

    max_upload_bytes: int = 200 * 2**20
    max_seconds: float = 600.0


def stored_name(kind: str, uploaded_name: str | None, allowed: tuple[str, ...]) -> str:
    """`video.mp4`, `audio.wav`...: a fixed name with the uploaded suffix when it is a known one."""
    suffix = Path(uploaded_name or "").suffix.lower()
    return kind + (suffix if suffix in allowed else "")


def save_upload(source: BinaryIO, target: Path, limits: Limits, what: str) -> None:
    """Copy an uploaded stream to `target`, stopping with TooLarge past the size limit."""
    written = 0
    with open(target, "wb") as out:
        while chunk := source.read(_CHUNK):
            written += len(chunk)
            if written > limits.max_upload_bytes:
                raise TooLarge(f"the {what} upload is larger than this server's limit of "
                               f"{limits.max_upload_bytes / 2**20:g} MB", "send a shorter or more compressed file")
            out.write(chunk)
    if written == 0:
        raise InputError(f"the {what} upload is empty", f"attach the {what} file")


def copy_file(source: str | Path, target: Path, limits: Limits, what: str) -> None:
    """Copy a file given by path (web page uploads, the demo clip) under the same size limit."""
    with open(source, "rb") as stream:
        save_upload(stream, target, limits, what)


def job_settings(
    steps: int | None = None,
    guidance: float | None = None,
    seed: int | None = None,
    version: str | None = None,
    face_x: float | None = None,
    face_y: float | None = None,
    face_index: int | None = None,
    *,
    versions: tuple[str, ...],
) -> dict[str, Any]:
    """The options of a job as plain JSON values, range-checked (InputError naming the field otherwise)."""
    settings = {
        "steps": DEFAULT_STEPS if steps is None else steps,
        "guidance": DEFAULT_GUIDANCE if guidance is None else guidance,
        "seed": seed,
        "version": versions[0] if version is None else version,
        "face_point": None,
        "face_index": face_index,
    }
    if settings["version"] not in versions:
        raise InputError(f"this server runs LatentSync {', '.join(versions)}, not {settings['version']!r}",
                         f"choose version {' or '.join(versions)}")
    if (face_x is None) != (face_y is None):
        raise InputError("a face point needs both face_x and face_y", "give both, or neither for the largest face")
    if face_x is not None:
        if not (math.isfinite(face_x) and math.isfinite(face_y)):
            raise InputError(f"face_x and face_y must be finite pixel positions, got {face_x}, {face_y}")
        settings["face_point"] = [float(face_x), float(face_y)]
    run_options(settings).check()  # the command line's range checks
    return settings


def run_options(settings: dict[str, Any], on_progress: ProgressCallback | None = None) -> RunOptions:
    """RunOptions of a job's settings (progress bars off: a server reports progress through `on_progress`)."""
    point = settings.get("face_point")
    selection = FaceSelection(point=tuple(point) if point else None, index=settings.get("face_index"))
    return RunOptions(num_inference_steps=settings["steps"], guidance_scale=settings["guidance"], seed=settings["seed"],
                      selection=selection, progress=False, on_progress=on_progress)


def check_media(video: Path, audio: Path, settings: dict[str, Any], limits: Limits) -> None:
    """Check saved uploads as `latentsync infer` checks its inputs, plus the server's duration limit and the
    face point's position. Anything unreadable is an InputError (a bad upload, never a server error)."""
    try:
        job = check_inputs(video, audio, None, run_options(settings))
    except LatentSyncError as exc:  # the message names the uploads, not where this server keeps them
        message = exc.message.replace(str(video), "the uploaded video").replace(str(audio), "the uploaded audio")
        raise InputError(message, exc.hint) from exc
    except Exception as exc:  # a decoder failing on a damaged file in some unforeseen way is still a bad upload
        log.warning("upload check failed unexpectedly: %r", exc)
        raise InputError(f"cannot read the uploaded media: {exc}", "upload a video and a speech track ffmpeg can read") from exc
    info = job.info
    speech_seconds = len(job.speech) / SAMPLE_RATE
    for what, seconds in (("video", info.duration), ("speech", speech_seconds)):
        if seconds > limits.max_seconds:
            raise InputError(f"the {what} is {seconds:.1f} s long; this server accepts at most {limits.max_seconds:g} s",
                             "split it into shorter parts")
    point = settings.get("face_point")
    if point and not (0 <= point[0] < info.width and 0 <= point[1] < info.height):
        raise InputError(f"the face point {point[0]:g}, {point[1]:g} is outside the {info.width}x{info.height} video",
                         "give pixel positions inside the frame")


def discard(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
