"""The fixed mouth mask (SPEC section 6): 1 keeps the pixel, 0 marks the lower face the model regenerates."""

from __future__ import annotations

import cv2
import numpy as np

from ..errors import InputError
from ..packaged import MOUTH_MASK, packaged_file


def load_mouth_mask(resolution: int, path: str | None = None) -> np.ndarray:
    """The mask as (R,R) float32 in [0,1]; other sizes than 256 are resized with Lanczos-4 as published."""
    image = cv2.imread(str(path or packaged_file(MOUTH_MASK)), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise InputError(f"cannot read the mask image {path}", "pass a grayscale PNG, white = keep, black = regenerate")
    if image.shape != (resolution, resolution):
        image = cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_LANCZOS4)
    return image.astype(np.float32) / 255.0
