"""Synthetic talking clips with a known mouth-audio relation, for checking that the trainers learn sync.

Each clip is laid out as `latentsync prepare` writes it (an R x R, 25 fps H.264 video of one "face" with its
16 kHz speech muxed in as AAC). The speech is a voiced buzz (a random fundamental with its harmonics) whose
loudness follows a random on/off envelope of 80-320 ms segments; a dark ellipse in the lower half of the face
opens and closes with the same envelope, frame by frame. The mouth opening of frame f is the mean of the
envelope over that frame's 40 ms, so in-sync windows of frames and mel correlate strongly and off-sync ones
do not. Colours, mouth position and pitch vary per clip so that a model has to look at the mouth, not at
the clip.

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
SEGMENT_MS = (80, 320)  # length range of one "syllable" or pause of the envelope
FILESLIST = "fileslist.txt"  # as `latentsync prepare` names it


@dataclass(frozen=True)
class SyncClip:
    """One synthetic clip: its file and the mouth opening of each video frame (0 closed .. 1 fully open)."""

    path: Path
    opening: np.ndarray  # (frames,) float32


def speech_envelope(samples: int, rng: np.random.Generator) -> np.ndarray:
    """A loudness envelope in [0, 1] per audio sample: segments of 80-320 ms, each silent (one in three) or voiced
    at a random level in [0.2, 1], with 10 ms ramps so that the buzz does not click.

    Segments are drawn independently rather than strictly alternating: an alternating envelope is nearly periodic,
    and windows a period apart would then look in sync with each other's audio."""
    envelope = np.zeros(samples, np.float32)
    position = 0
    while position < samples:
        length = int(rng.integers(*SEGMENT_MS) * SAMPLE_RATE / 1000)
        if rng.random() >= 1 / 3:
            envelope[position : position + length] = rng.uniform(0.2, 1.0)
        position += length
    ramp = np.hanning(int(0.02 * SAMPLE_RATE)).astype(np.float32)
    return np.convolve(envelope, ramp / ramp.sum(), mode="same").clip(0, 1)


def buzz(envelope: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A voiced buzz (fundamental 90-220 Hz with a slow vibrato, 24 harmonics falling as 1/k) shaped by
    `envelope`, plus a faint noise floor; float32 at 16 kHz, peak below 0.5."""
    t = np.arange(len(envelope)) / SAMPLE_RATE
    f0 = rng.uniform(90, 220) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 25))
    voice = voice / np.abs(voice).max()
    noise = rng.standard_normal(len(t)) * 0.002
    return (0.45 * envelope * voice + noise).astype(np.float32)


def frame_openings(envelope: np.ndarray, frames: int) -> np.ndarray:
    """The mean of the envelope over each 25 fps frame's span of samples."""
    per_frame = SAMPLES_PER_FRAME
    padded = np.zeros(frames * per_frame, np.float32)
    padded[: min(len(envelope), len(padded))] = envelope[: len(padded)]
    return padded.reshape(frames, per_frame).mean(axis=1)


def face_frames(opening: np.ndarray, resolution: int, rng: np.random.Generator) -> np.ndarray:
    """(F, R, R, 3) uint8 RGB: a skin-coloured face with eyes, and a dark mouth ellipse in the lower half whose
    height follows `opening` (closed: a thin line of lip colour)."""
    r = resolution
    skin = rng.uniform([170, 120, 95], [235, 190, 160])
    lips = skin * np.array([0.75, 0.45, 0.45])
    background = np.empty((r, r, 3), np.float32)
    background[:] = skin
    background += np.linspace(-12, 12, r, dtype=np.float32)[:, None, None]  # soft vertical shading
    centre_x = r / 2 + rng.uniform(-0.05, 0.05) * r
    for side in (-1, 1):  # eyes in the upper half: present but of no use for sync
        cv2.ellipse(background, (int(centre_x + side * 0.18 * r), int(0.35 * r)), (max(1, int(0.07 * r)), max(1, int(0.035 * r))),
                    0, 0, 360, (60, 45, 40), -1)  # fmt: skip
    mouth = (int(centre_x), int(r * rng.uniform(0.70, 0.76)))
    width = max(2, int(r * rng.uniform(0.18, 0.24)))
    frames = np.empty((len(opening), r, r, 3), np.uint8)
    for index, amount in enumerate(opening):
        image = background.copy()
        height = max(1, int(round(r * (0.01 + 0.17 * float(amount)))))
        cv2.ellipse(image, mouth, (width, height + max(1, r // 64)), 0, 0, 360, tuple(lips.tolist()), -1)
        cv2.ellipse(image, mouth, (max(1, width - r // 64), height), 0, 0, 360, (45, 15, 20), -1)
        frames[index] = image.clip(0, 255).astype(np.uint8)
    return frames


def make_sync_clip(path: str | os.PathLike, seconds: float = 8.0, resolution: int = 256, seed: int = 0) -> SyncClip:
    """Write one synthetic clip (see the module docstring) to `path`; returns it with its per-frame mouth opening."""
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * FPS))
    envelope = speech_envelope(frames * SAMPLES_PER_FRAME, rng)
    speech = buzz(envelope, rng)
    opening = frame_openings(envelope, frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, resolution, resolution, fps=FPS, audio=speech) as writer:
        writer.write(face_frames(opening, resolution, rng))
    return SyncClip(path, opening)


def make_sync_clips(
    folder: str | os.PathLike, count: int = 12, seconds: float = 8.0, resolution: int = 256, seed: int = 0
) -> list[SyncClip]:
    """Write `count` synthetic clips `folder/clip_<i>.mp4` (clip i from seed (seed, i)) and `folder/fileslist.txt`
    listing them, as `latentsync prepare` does."""
    if count < 1 or seconds * FPS < 1 or resolution < 16:
        raise ValueError("need at least one clip, one frame and 16 pixels")
    folder = Path(folder)
    clips = [
        make_sync_clip(folder / f"clip_{i:03d}.mp4", seconds, resolution, seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
        for i in range(count)
    ]
    with atomic_path(folder / FILESLIST) as tmp:
        tmp.write_text("".join(f"{c.path.name}\n" for c in clips))
    return clips
