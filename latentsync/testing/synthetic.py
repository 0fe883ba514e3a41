"""Synthetic talking clips with a known mouth-audio relation, for checking that the trainers learn sync.

Each clip is laid out as `latentsync prepare` writes it (an R x R, 25 fps H.264 video of one "face" with its
16 kHz speech muxed in as AAC). The speech is a voiced buzz made of segments of whole video frames (one frame,
40 ms, by default): a third of them silent, the others at a random loudness and a random pitch (within one octave).
A dark ellipse in the lower half of the face is the mouth: its height follows the loudness (closed in silence)
and its width the pitch, frame by frame. Colours, mouth position and base pitch vary per clip, so that a model
has to look at the mouth, not at the clip.

Why this relation: a sync model compares 16 frames with their audio, and an off-sync window only fools it when
its frames happen to move like the audio's. With slow, syllable-long segments and one cue, a random other
window of the same clip correlates above 0.3 with the audio one time in four; segments aligned to frames and a
second, independent cue make that rare, so a model that has learnt sync can show it with a high accuracy. Longer
segments (`segment_frames=(2, 8)`: 80-320 ms, like syllables) make a harder set.

    clips = make_sync_clips("synthetic/", count=12, seconds=8, resolution=256)
    latentsync train-syncnet --config ... --fileslist synthetic/fileslist.txt
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..fileio import atomic_path
from ..media import FPS, VideoWriter
from ..timebase import SAMPLE_RATE

SAMPLES_PER_FRAME = int(SAMPLE_RATE / FPS)  # 640
SEGMENT_FRAMES = (1, 1)  # default length range of one sound or pause, in whole video frames
SILENT_SHARE = 1 / 3
SUBPIXEL_BITS = 4  # the mouth is drawn to 1/16 pixel with anti-aliased edges, so small faces show small changes
FILESLIST = "fileslist.txt"  # as `latentsync prepare` names it


@dataclass(frozen=True)
class SyncClip:
    """One synthetic clip: its file and, per video frame, the mouth's opening (0 closed .. 1 fully open: the
    loudness) and width (0 narrow .. 1 wide: the pitch)."""

    path: Path
    opening: np.ndarray  # (frames,) float32
    width: np.ndarray  # (frames,) float32


def speech_tracks(
    frames: int, rng: np.random.Generator, segment_frames: tuple[int, int] = SEGMENT_FRAMES
) -> tuple[np.ndarray, np.ndarray]:
    """(loudness, pitch) per audio sample for `frames` video frames, both in [0, 1]: segments of
    `segment_frames` (a range, in whole frames), each silent (one in three; pitch then 0.5) or voiced at a random
    loudness in [0.2, 1] and pitch in [0, 1]. The loudness gets 10 ms ramps so that the buzz does not click."""
    loudness = np.zeros(frames * SAMPLES_PER_FRAME, np.float32)
    pitch = np.full_like(loudness, 0.5)
    position = 0
    while position < len(loudness):
        end = position + int(rng.integers(segment_frames[0], segment_frames[1] + 1)) * SAMPLES_PER_FRAME
        if rng.random() >= SILENT_SHARE:
            loudness[position:end] = rng.uniform(0.2, 1.0)
            pitch[position:end] = rng.uniform(0.0, 1.0)
        position = end
    ramp = np.hanning(int(0.02 * SAMPLE_RATE)).astype(np.float32)
    return np.convolve(loudness, ramp / ramp.sum(), mode="same").clip(0, 1), pitch


def buzz(loudness: np.ndarray, pitch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A voiced buzz (24 harmonics falling as 1/k; the fundamental from a per-clip base of 90-130 Hz up to one
    octave above it with `pitch`) shaped by `loudness`, plus a faint noise floor; float32 at 16 kHz, peak below 0.5."""
    f0 = rng.uniform(90, 130) * 2.0**pitch
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 25))
    voice = voice / np.abs(voice).max()
    noise = rng.standard_normal(len(loudness)) * 0.002
    return (0.45 * loudness * voice + noise).astype(np.float32)


def per_frame(track: np.ndarray, frames: int) -> np.ndarray:
    """The mean of a per-sample track over each 25 fps frame's span of samples."""
    padded = np.zeros(frames * SAMPLES_PER_FRAME, np.float32)
    padded[: min(len(track), len(padded))] = track[: len(padded)]
    return padded.reshape(frames, SAMPLES_PER_FRAME).mean(axis=1)


def face_frames(opening: np.ndarray, width: np.ndarray, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """(F, R, R, 3) uint8 RGB: a skin-coloured face with eyes, and a dark mouth ellipse in the lower half whose
    height follows `opening` (closed: a thin dark line between the lips) and width follows `width`."""
    r = resolution
    skin = rng.uniform([170, 120, 95], [235, 190, 160])
    lips = tuple((skin * np.array([0.75, 0.45, 0.45])).tolist())
    background = np.empty((r, r, 3), np.float32)
    background[:] = skin
    background += np.linspace(-12, 12, r, dtype=np.float32)[:, None, None]  # soft vertical shading
    centre_x = r / 2 + rng.uniform(-0.05, 0.05) * r
    for side in (-1, 1):  # eyes in the upper half: present but of no use for sync
        cv2.ellipse(background, (int(centre_x + side * 0.18 * r), int(0.35 * r)), (max(1, int(0.07 * r)), max(1, int(0.035 * r))),
                    0, 0, 360, (60, 45, 40), -1)  # fmt: skip
    unit = 1 << SUBPIXEL_BITS
    centre = (round(centre_x * unit), round(r * rng.uniform(0.70, 0.76) * unit))
    lip = max(1.0, r / 48)

    def ellipse(image: np.ndarray, half_width: float, half_height: float, colour: tuple) -> None:
        axes = (round(half_width * unit), round(half_height * unit))
        cv2.ellipse(image, centre, axes, 0, 0, 360, colour, -1, cv2.LINE_AA, SUBPIXEL_BITS)

    frames = np.empty((len(opening), r, r, 3), np.uint8)
    for index, (amount, spread) in enumerate(zip(opening.tolist(), width.tolist())):
        image = background.copy()
        half_height, half_width = r * (0.02 + 0.16 * amount), r * (0.13 + 0.14 * spread)
        ellipse(image, half_width, half_height + lip, lips)
        ellipse(image, half_width - lip, half_height, (45, 15, 20))
        frames[index] = image.clip(0, 255).astype(np.uint8)
    return frames


def make_sync_clip(
    path: str | os.PathLike,
    seconds: float = 8.0,
    resolution: int = 256,
    seed: int = 0,
    segment_frames: tuple[int, int] = SEGMENT_FRAMES,
) -> SyncClip:
    """Write one synthetic clip (see the module docstring) to `path`; returns it with its per-frame mouth shape."""
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * FPS))
    loudness, pitch = speech_tracks(frames, rng, segment_frames)
    speech = buzz(loudness, pitch, rng)
    opening, width = per_frame(loudness, frames), per_frame(pitch, frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, resolution, resolution, fps=FPS, audio=speech) as writer:
        writer.write(face_frames(opening, width, resolution, rng))
    return SyncClip(path, opening, width)


def make_sync_clips(
    folder: str | os.PathLike,
    count: int = 12,
    seconds: float = 8.0,
    resolution: int = 256,
    seed: int = 0,
    segment_frames: tuple[int, int] = SEGMENT_FRAMES,
) -> list[SyncClip]:
    """Write `count` synthetic clips `folder/clip_<i>.mp4` (clip i from seed (seed, i)) and `folder/fileslist.txt`
    listing them, as `latentsync prepare` does. `segment_frames`: the range of a sound's or pause's length, in
    video frames."""
    if count < 1 or seconds * FPS < 1 or resolution < 16:
        raise ValueError("need at least one clip, one frame and 16 pixels")
    if not 1 <= segment_frames[0] <= segment_frames[1]:
        raise ValueError(f"segment_frames must be a range (shortest, longest) of at least one frame, not {segment_frames}")
    folder = Path(folder)
    clips = [
        make_sync_clip(folder / f"clip_{i:03d}.mp4", seconds, resolution, int(np.random.SeedSequence([seed, i]).generate_state(1)[0]), segment_frames)
        for i in range(count)
    ]
    with atomic_path(folder / FILESLIST) as tmp:
        tmp.write_text("".join(f"{c.path.name}\n" for c in clips))
    return clips
