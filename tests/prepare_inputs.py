"""Inputs for the data-pipeline tests, made from the real demo clips (small and short, for speed): a video of two
different clips joined by a hard cut, one whose frames show no face, a 30 fps clip and a damaged file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from conftest import MEDIA
from latentsync.audio import load_audio
from latentsync.media import VideoWriter, read_frames

CUT_FRAME = 50  # cut.mp4: demo1 for 2 s, then demo2 for 2 s
SIZE = (180, 320)  # width, height of the inputs (half of the 360p demo clips)


def small_frames(name: str) -> np.ndarray:
    return np.stack([cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA) for _, f in read_frames(MEDIA / name)])


def make_inputs(folder: Path) -> Path:
    folder.mkdir(parents=True)
    first, second = small_frames("demo1_360p.mp4"), small_frames("demo2_360p.mp4")
    speech = np.concatenate([load_audio(MEDIA / f"demo{i}_360p.mp4")[:32000] for i in (1, 2)])
    with VideoWriter(folder / "cut.mp4", *SIZE, audio=speech) as writer:
        writer.write(first)
        writer.write(second)
    torso = second[:25, SIZE[1] // 2 :]  # the lower half of the frame: a sweater and hands, no face
    with VideoWriter(folder / "noface.mp4", torso.shape[2], torso.shape[1], audio=speech[:16000]) as writer:
        writer.write(torso)
    # 30 fps: resampled to 25 while decoding
    third = small_frames_at_source_rate("demo3_360p.mp4")
    with VideoWriter(folder / "demo3_30fps.mp4", *SIZE, fps=30, audio=load_audio(MEDIA / "demo3_360p.mp4")) as writer:
        writer.write(third)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return folder


def small_frames_at_source_rate(name: str) -> np.ndarray:
    frames = [f for _, f in read_frames(MEDIA / name, fps=30)]
    return np.stack([cv2.resize(f, SIZE, interpolation=cv2.INTER_AREA) for f in frames])
