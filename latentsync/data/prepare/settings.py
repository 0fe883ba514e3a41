"""What a `prepare` run depends on: the steps switched on and every setting and threshold, with the published
defaults (SPEC 11), checked before any work starts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import InputError
from ...timebase import FPS

# Steps that can be switched off (`--skip`). Reading, face tracking, segmenting, alignment and writing the kept
# clips always run: without them there is no clip.
OPTIONAL_STEPS = ("resample", "shots", "sync", "quality")


@dataclass(frozen=True)
class PrepareSettings:
    """Settings of the data pipeline. Changing one redoes only the steps that depend on it (see `steps.py`)."""

    resolution: int = 256
    min_seconds: float = 5.0  # published segments: 5-10 s
    max_seconds: float = 10.0
    face_backend: str = "auto"
    skip: tuple[str, ...] = ()  # names from OPTIONAL_STEPS
    shot_threshold: float = 2.0  # PySceneDetect adaptive detector, as published
    min_face_size: float = 0.0  # px, shorter side of the face box (median over the clip); 0: no size filter
    max_faces: int = 0  # most faces on the clip's first, middle and last frame; 0: no count filter
    min_sync_confidence: float = 3.0
    max_sync_offset: float = 6.0
    min_quality: float = 40.0
    val_fraction: float = 0.05  # share of source videos held out for validation

    def __post_init__(self):
        object.__setattr__(self, "skip", tuple(sorted(set(self.skip))))

    def enabled(self, step: str) -> bool:
        """Whether an optional step runs (the face filter runs when one of its limits is set)."""
        if step == "face_filter":
            return self.min_face_size > 0 or self.max_faces > 0
        return step not in self.skip

    def check(self) -> None:
        unknown = [s for s in self.skip if s not in OPTIONAL_STEPS]
        if unknown:
            raise InputError(f"unknown step(s) to skip: {', '.join(unknown)}", f"choose from {', '.join(OPTIONAL_STEPS)}")
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
        if self.min_face_size < 0 or self.max_faces < 0:
            raise InputError("the face size and face count limits cannot be negative", "use 0 to switch them off")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"the validation share must be in [0, 1), got {self.val_fraction}", "e.g. 0.05")
        for name in ("shot_threshold", "min_sync_confidence", "max_sync_offset", "min_quality"):
            if not math.isfinite(getattr(self, name)):
                raise InputError(f"{name.replace('_', ' ')} must be a finite number", "pass a number")

    def clip_frames(self) -> tuple[int, int]:
        """(fewest, most) frames of a clip: whole frames within min_seconds .. max_seconds."""
        return math.ceil(self.min_seconds * FPS - 1e-9), int(self.max_seconds * FPS + 1e-9)
