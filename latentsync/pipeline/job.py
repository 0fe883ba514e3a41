"""One lip-sync job: the options a user can tune, the inputs checked before any model work, and the report.

`check_inputs` does every check that needs no model, so a command line can fail in a second on a bad input and
only then load the weights; the pipeline takes the checked `LipSyncJob` as it is. This module stays light (no
torch): the media modules are imported only once the paths are known to exist.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import InputError
from ..face.track import FaceSelection, FaceTrack
from ..fileio import check_readable
from ..timebase import FPS, SAMPLE_RATE

if TYPE_CHECKING:
    import numpy as np

    from ..media import VideoInfo

# Sampling defaults of the published inference (SPEC 9); the command line, the API and training validation use these.
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 1.5
SEGMENTING = ("seamless", "reference")
MAX_STEPS = 1000  # the scheduler's training steps: DDIM cannot take more
TRACK_SUFFIXES = (".json", ".npz")
# Faces are encoded by the VAE (1/8 size) and the U-Net halves that three times: sides must be multiples of 64.
RESOLUTION_STEP = 64
MAX_RESOLUTION = 2048
DEVICES = re.compile(r"(auto|cpu|mps|cuda(:\d+)?)")

# on_progress(stage, done, total): stage is "audio", "faces" or "lip-sync"; raising inside it stops the job.
ProgressCallback = Callable[[str, int, int], None]


def _whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass
class RunOptions:
    """What a user can tune for one job (the command line maps onto these one to one)."""

    num_inference_steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE
    seed: int | None = None  # None: a random seed, reported in the summary
    segmenting: str = "seamless"  # Whisper segmentation: "seamless" or "reference" (published)
    selection: FaceSelection = field(default_factory=FaceSelection)
    track: str | os.PathLike | FaceTrack | None = None  # reuse a saved face track instead of detecting
    save_track: str | os.PathLike | None = None
    progress: bool = True  # progress bars
    crf: int = 18
    allow_truncated: bool = False  # lip-sync the decodable frames of a cut-off video (with a warning) instead of failing
    on_progress: ProgressCallback | None = None
    # Speed (see README "Speed"): the deep U-Net branch every N-th step only (1 = exact), the sampler, how many
    # frames the VAE decodes at once, torch.compile of the U-Net and VAE decoder, a prepared avatar of the video.
    step_reuse: int = 1
    scheduler: str = "ddim"
    batch_chunks: int = 1  # 16-frame chunks per U-Net call (more: better use of a large GPU)
    vae_slice: int = 4
    compile: bool = False
    avatar: str | os.PathLike | None = None

    def check(self) -> None:
        """Raise InputError for any value out of range, naming the option and what to give instead."""
        steps = self.num_inference_steps
        if not _whole(steps) or not 1 <= steps <= MAX_STEPS:
            raise InputError(f"--steps (denoising steps) must be a whole number from 1 to {MAX_STEPS}, got {steps!r}",
                             f"20-50 is typical (default {DEFAULT_STEPS})")
        guidance = self.guidance_scale
        if isinstance(guidance, bool) or not isinstance(guidance, numbers.Real) or not math.isfinite(guidance) \
                or guidance < 1.0:
            raise InputError(f"--guidance (audio guidance scale) must be a number of at least 1.0, got {guidance!r}",
                             f"1.0 turns audio guidance off; 1.0-3.0 is typical (default {DEFAULT_GUIDANCE})")
        if self.seed is not None and (not _whole(self.seed) or not 0 <= self.seed < 2**63):
            raise InputError(f"--seed must be a whole number from 0 to 2**63 - 1, got {self.seed!r}",
                             "leave it out for a random seed (printed in the summary)")
        if self.segmenting not in SEGMENTING:
            raise InputError(f"unknown Whisper segmenting {self.segmenting!r}", f"choose one of {', '.join(SEGMENTING)}")
        if not _whole(self.crf) or not 0 <= self.crf <= 51:
            raise InputError(f"--crf (H.264 quality) must be a whole number from 0 to 51, got {self.crf!r}",
                             "lower is better; 18 is visually lossless, 23 is FFmpeg's default")
        if not isinstance(self.selection, FaceSelection):
            raise InputError(f"the face selection must be a FaceSelection, got {type(self.selection).__name__}",
                             "e.g. FaceSelection(index=0) for the leftmost face")
        if self.track is not None and not isinstance(self.track, (str, os.PathLike, FaceTrack)):
            raise InputError(f"a face track is a file path or a FaceTrack, got {type(self.track).__name__}",
                             "give the .json or .npz file saved with save_track")
        for name, value, hint in (("step reuse", self.step_reuse, "1 is exact sampling; 3 computes the deep U-Net features every third step"),
                                  ("VAE slice", self.vae_slice, "frames the VAE decodes at once (fewer: less GPU memory)"),
                                  ("number of chunks per U-Net call", self.batch_chunks, "1 (default) to 4")):
            if not _whole(value) or value < 1:
                raise InputError(f"the {name} must be a whole number of at least 1, got {value!r}", hint)
        if self.scheduler != "ddim":
            from ..models.scheduler import SCHEDULERS

            if self.scheduler not in SCHEDULERS:
                raise InputError(f"unknown scheduler {self.scheduler!r}", f"choose one of {', '.join(SCHEDULERS)}")
        if self.save_track is not None and Path(self.save_track).suffix.lower() not in TRACK_SUFFIXES:
            raise InputError(f"a face track is saved as .json or .npz, got {Path(self.save_track).name!r}",
                             "e.g. --save-track track.json")
        for name in ("progress", "allow_truncated"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, got {getattr(self, name)!r}", f"e.g. {name}=True")


def check_model_options(resolution: int | None = None, device: object = None) -> None:
    """Check the model options a user gives by hand (the face resolution, the device name), before any loading."""
    if resolution is not None and (not _whole(resolution) or resolution % RESOLUTION_STEP
                                   or not RESOLUTION_STEP <= resolution <= MAX_RESOLUTION):
        raise InputError(f"--resolution (face size in pixels) must be a multiple of {RESOLUTION_STEP} from "
                         f"{RESOLUTION_STEP} to {MAX_RESOLUTION}, got {resolution!r}",
                         "use the size the U-Net was trained at: 256 for 1.5, 512 for 1.6 (the default)")
    if isinstance(device, str) and not DEVICES.fullmatch(device):
        raise InputError(f"unknown device {device!r}", "use cpu, cuda, cuda:N (a GPU number) or mps")


@dataclass(frozen=True)
class LipSyncJob:
    """The checked inputs of one job (made by `check_inputs`)."""

    video: Path
    info: VideoInfo
    speech: np.ndarray  # 16 kHz mono float32
    output: Path | None  # None: the frames are returned instead
    options: RunOptions
    track: FaceTrack | None  # the saved track given in the options, loaded and checked against the video
    warnings: tuple[str, ...] = ()  # what the user should know about the result (in the report's summary)
    avatar: Any = None  # the prepared avatar (an `avatar.Avatar`) given in the options: video, track, latents

    @property
    def num_video_frames(self) -> int:
        """Frames of the video at 25 fps (1 for a still photo)."""
        return self.info.frames_at(FPS)

    @property
    def num_output_frames(self) -> int:
        """One frame per 40 ms of speech (a trailing partial frame is dropped)."""
        return int(len(self.speech) * FPS // SAMPLE_RATE)


def check_inputs(
    video: str | os.PathLike | None,
    audio: str | os.PathLike | None,
    output: str | os.PathLike | None = None,
    options: RunOptions | None = None,
) -> LipSyncJob:
    """Check the options, the video (or still photo), the speech, a saved face track and the output location; raise
    a clear InputError before anything expensive. The inputs are only read.

    A truncated video (its index lists more frames than decode) is refused unless `options.allow_truncated`.
    """
    options = options or RunOptions()
    options.check()
    if audio is None:
        raise InputError("no speech track given", "pass --audio with the speech the video should say")
    avatar = None
    if options.avatar is not None:
        from .avatar import Avatar

        if video is not None or options.track is not None:
            raise InputError("an avatar already holds its video and face track", "give --avatar without --video/--track")
        avatar = options.avatar if isinstance(options.avatar, Avatar) else Avatar.load(options.avatar)
        video = avatar.video
        if output is not None and Path(output).resolve() == avatar.path.resolve():
            raise InputError(f"the output would overwrite the avatar {avatar.path}", "choose another --output")
    elif video is None:
        raise InputError("no video given", "pass --video, or --avatar with a prepared avatar")
    check_readable(video, "video")  # the quick checks first: no media library is loaded for a wrong path
    check_readable(audio, "audio")
    from ..audio.io import load_audio
    from ..media import check_output_path, probe_video

    if output is not None:
        check_output_path(output, video, audio)
    info = probe_video(video)
    warnings = list(_video_warnings(video, info, options, output is not None))
    track = avatar.track if avatar is not None else None
    if options.track is not None:
        from ..face.video import load_video_track

        track = load_video_track(options.track, info)
    job = LipSyncJob(Path(video), info, load_audio(audio), Path(output) if output is not None else None, options, track,
                     tuple(warnings), avatar)
    if job.num_output_frames == 0:
        raise InputError(f"the speech track {audio} is shorter than one video frame (40 ms)", "pass a longer audio file")
    return job


def _video_warnings(video: str | os.PathLike, info: VideoInfo, options: RunOptions, writes: bool):
    """Refuse a truncated video unless allowed; say what the output will differ in."""
    if info.truncated:
        if not options.allow_truncated:
            raise InputError(f"{video} is cut off: only {info.num_frames} of the {info.listed_frames} frames its "
                             "index lists can be decoded",
                             f"get a complete copy, or pass --allow-truncated to lip-sync the {info.num_frames} "
                             f"frames that decode ({info.duration:.2f} s)")
        yield (f"{Path(video).name} is cut off: lip-synced the {info.num_frames} frames that decode, of the "
               f"{info.listed_frames} its index lists")
    if writes and (info.width % 2 or info.height % 2):
        yield (f"the {info.width}x{info.height} frames are padded by one pixel to {info.width + info.width % 2}x"
               f"{info.height + info.height % 2} (the edge repeated): H.264 in 4:2:0 needs even sizes")


@dataclass
class RunReport:
    """What a job did: sizes, faces (see `FaceTrack.counts`), the seed, and seconds per stage."""

    output: Path | None = None
    seed: int = 0
    video_frames: int = 0
    output_frames: int = 0
    still: bool = False  # the input was a still photo
    faces: dict[str, int] = field(default_factory=dict)  # found / interpolated / absent frames
    face_backend: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of the steps, one after the other
    busy: dict[str, float] = field(default_factory=dict)  # time spent in each concurrent lip-sync stage
    warnings: list[str] = field(default_factory=list)  # see LipSyncJob.warnings

    @property
    def output_seconds(self) -> float:
        return self.output_frames / FPS

    def summary(self) -> str:
        """One line of figures, then one `warning: ...` line per warning."""
        total = sum(self.seconds.values())
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.busy.items())
        faces = self.faces
        source = "a still photo" if self.still else f"{self.video_frames} video frames"
        return (
            f"{self.output_frames} frames ({self.output_seconds:.2f} s) from {source}; "
            f"faces: {faces.get('found', 0)} found, {faces.get('interpolated', 0)} bridged, "
            f"{faces.get('absent', 0)} passed through ({self.face_backend}); seed {self.seed}; "
            f"{total:.1f} s total ({steps}; lip-sync stages busy: {stages})"
            + (f"; wrote {self.output}" if self.output else "")
            + "".join(f"\nwarning: {w}" for w in self.warnings)
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {**asdict(self), "output": str(self.output) if self.output else None, "output_seconds": self.output_seconds}


@dataclass(frozen=True)
class LipSyncOutput:
    """What a whole-video call returns: the written file, or the frames when no output path was given."""

    path: Path | None
    frames: np.ndarray | None  # (N, H, W, 3) uint8
    report: RunReport
