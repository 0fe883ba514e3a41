"""Alignment reads only each crop's source box: the crops equal a whole-frame warp bit for bit on real 1080p frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import MEDIA, golden
from latentsync.face.align import FILL, FaceAligner
from latentsync.media import read_frames


def _whole_frame_crop(frame: np.ndarray, mat: np.ndarray, crop_wh: tuple[int, int]) -> np.ndarray:
    """The published warp: the whole frame as float32, an affine grid over it, grey where it reads outside."""
    height, width = frame.shape[:2]
    crop_w, crop_h = crop_wh

    def to_unit(h: int, w: int) -> torch.Tensor:
        return torch.tensor([[2 / (w - 1), 0, -1], [0, 2 / (h - 1), -1], [0, 0, 1]], dtype=torch.float32)

    full = torch.cat([torch.from_numpy(mat).float(), torch.tensor([[0.0, 0.0, 1.0]])])
    theta = torch.linalg.inv(to_unit(crop_h, crop_w) @ (full @ torch.linalg.inv(to_unit(height, width))))[None, :2]
    grid = F.affine_grid(theta, [1, 1, crop_h, crop_w], align_corners=True)
    image = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    warped = F.grid_sample(image, grid, align_corners=True)
    coverage = F.grid_sample(torch.ones(1, 1, height, width), grid, align_corners=True)
    return (warped + (1 - coverage) * FILL)[0].clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("resolution", [256, 512])
def test_crop_equals_whole_frame_warp(resolution):
    frames = np.stack([frame for i, (_, frame) in zip(range(4), read_frames(MEDIA / "demo1_1080p.mp4"))])
    points = golden("affine_io")["landmarks3"].numpy()[:4]
    # Real faces put at four places of the 1080 x 1920 frames: inside, half over the left edge, over the bottom
    # right corner, and wholly outside.
    shifts = np.array([[220, 600], [-340, 900], [780, 1700], [-2000, 100]], np.float32)
    aligner = FaceAligner(resolution)
    mats = np.concatenate([aligner.matrices(points[i : i + 1] + shifts[i]) for i in range(4)])
    crops = aligner.crop(frames, mats)
    for i in range(4):
        np.testing.assert_array_equal(crops[i], _whole_frame_crop(frames[i], mats[i], aligner.crop_size))
    assert (crops[3] == FILL).all() and (crops[1] == FILL).any() and (crops[0] != FILL).mean() > 0.99
    # the same crops one frame at a time, and again after other frames have been through the reused canvas
    for i in (3, 2, 1, 0):
        np.testing.assert_array_equal(aligner.crop(frames[i : i + 1], mats[i : i + 1])[0], crops[i])
