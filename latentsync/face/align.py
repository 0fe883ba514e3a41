"""Face alignment to the published three-point template, and pasting a generated face back.

Everything is batched over frames and runs on the aligner's device. The arithmetic follows the
published implementation closely enough for pixel parity: the similarity transform is solved in
float32 (as published), warps are bilinear in float32 with pixel centres at integer coordinates,
and float images become uint8 by truncation, not rounding (also as published).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from latentsync.errors import InputError
from latentsync.face.resize import resize_lanczos4

TEMPLATE = ((17.0, 20.0), (58.0, 20.0), (37.5, 40.0))  # eyebrow left, eyebrow right, nose, at scale 1
TEMPLATE_SCALE = 2.8  # template scale at R = 256
CROP_UNITS = (75, 100)  # crop (width, height) at scale 1
FILL = 127.0  # grey used where a warp reads outside its source
BIAS_KEEP = 0.2  # weight of the previous frame's nose bias in the published smoothing
PASTE_MARGIN = 8  # px of zero alpha kept around a pasted face (the published feather spills one pixel out)


def _pixel_to_unit(height: int, width: int) -> torch.Tensor:
    """3x3 map from pixel coordinates (centres at integers) to grid_sample's [-1, 1] with align_corners=True."""
    return torch.tensor(
        [[2.0 / (width - 1), 0.0, -1.0], [0.0, 2.0 / (height - 1), -1.0], [0.0, 0.0, 1.0]],
        dtype=torch.float32,
    )


def _homogeneous(mats: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) affine matrices -> (N, 3, 3)."""
    last = mats.new_tensor([0.0, 0.0, 1.0]).expand(mats.shape[0], 1, 3)
    return torch.cat([mats, last], dim=1)


class _Canvas(threading.local):
    """Per thread, a reusable float32 frame-sized image (1, 4, H, W): three colour channels, filled only where a
    warp reads, and a channel of ones whose samples give the coverage. Reused, so a frame costs no allocation."""

    image: torch.Tensor | None = None

    def get(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        image = self.image
        if image is None or image.shape[-2:] != (height, width) or image.device != device:
            image = torch.zeros(1, 4, height, width, device=device)  # finite everywhere: never-read pixels are 0
            image[:, 3] = 1
            self.image = image
        return image


# Paste-back works on slices of frames whose largest float temporary (3 channels over the face's box) stays under
# this size.
_PASTE_FLOATS_PER_PIXEL = 3
_PASTE_SLICE_BYTES = 4 * 2**20


def _warp(frames: torch.Tensor, mats: torch.Tensor, out_hw: tuple[int, int], canvas: _Canvas) -> torch.Tensor:
    """Bilinear warp of (N, H, W, 3) uint8 frames by source->destination pixel matrices (N, 2, 3) into
    (N, h, w, 3) uint8 crops, the grey fill blended in where the warp reads outside the frame.

    Like the published warp, each frame is sampled as a whole with grid_sample (same positions, same arithmetic),
    but only the pixels its crop reads (its source box, a small part of a 1080p frame) are converted to float,
    into a reused canvas. A frame's crop depends only on its frame and matrix, never on the rest of the batch.
    """
    n, height, width = frames.shape[:3]
    src_unit = _pixel_to_unit(height, width).to(mats.device)
    dst_unit = _pixel_to_unit(*out_hw).to(mats.device)
    # Composed in float32 in this order, as the published (kornia) warp does: fewer 1-level flips.
    unit = dst_unit @ (_homogeneous(mats) @ torch.linalg.inv(src_unit))
    theta = torch.linalg.inv(unit)[:, :2]
    grid = F.affine_grid(theta, [n, 1, *out_hw], align_corners=True)
    inverse = torch.linalg.inv(_homogeneous(mats))[:, :2]
    image = canvas.get(height, width, mats.device)
    crops = torch.full((n, *out_hw, 3), int(FILL), dtype=torch.uint8, device=mats.device)
    for i in range(n):
        # Every frame pixel a sample's bilinear neighbours can reach, with slack for float rounding. Outside this
        # box the canvas holds zeros or other frames' pixels, never read.
        box = _footprint(inverse[i : i + 1], out_hw[::-1], (width, height), margin=2)
        if box is None:  # the crop reads nothing of its frame: all fill
            continue
        x0, y0, x1, y1 = box
        image[0, :3, y0:y1, x0:x1] = frames[i, y0:y1, x0:x1].to(mats.device).permute(2, 0, 1)
        sampled = F.grid_sample(image, grid[i : i + 1], mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        crops[i] = _to_uint8(sampled[:3] + (1 - sampled[3:]) * FILL).permute(1, 2, 0)
    return crops


def _sample_region(images: torch.Tensor, mats: torch.Tensor, box: tuple[int, int, int, int]):
    """Bilinear samples of (N, C, h, w) images at mats @ (x, y, 1) for every integer pixel (x, y) of `box`.

    The sampling positions depend only on the absolute pixel and the matrix, never on the box, so a frame
    pastes identically whatever else shares its batch. Returns the samples and their coverage (N, 1, H, W).
    """
    x0, y0, x1, y1 = box
    n, _, height, width = images.shape
    xs = torch.arange(x0, x1, dtype=torch.float32, device=images.device)
    ys = torch.arange(y0, y1, dtype=torch.float32, device=images.device)
    m = mats.to(images.device, torch.float32)[:, :, :, None, None]  # (N, 2, 3, 1, 1)
    px = m[:, 0, 0] * xs + m[:, 0, 1] * ys[:, None] + m[:, 0, 2]
    py = m[:, 1, 0] * xs + m[:, 1, 1] * ys[:, None] + m[:, 1, 2]
    grid = torch.stack([px * (2.0 / (width - 1)) - 1.0, py * (2.0 / (height - 1)) - 1.0], dim=-1)
    samples = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    coverage = F.grid_sample(images.new_ones(n, 1, height, width), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return samples, coverage


def _footprint(mats: torch.Tensor, src_wh: tuple[int, int], limit_wh: tuple[int, int], margin: int):
    """Integer box (x0, y0, x1, y1), x1/y1 exclusive, holding the image of a src_wh rectangle under every matrix
    of the batch, grown by `margin` and clipped to limit_wh; None when it is empty.

    Paste-back only touches this box: at 1080p the face is a small part of the frame. Outside it the
    pasted alpha is exactly zero, and a margin of zeros inside it keeps erosion and blur identical to full frames.
    """
    w, h = src_wh
    corners = mats.new_tensor([[0, w - 1, 0, w - 1], [0, 0, h - 1, h - 1], [1, 1, 1, 1]])
    points = mats.double() @ corners.double()  # (N, 2, 4)
    x0 = max(int(np.floor(points[:, 0].min().item())) - margin, 0)
    y0 = max(int(np.floor(points[:, 1].min().item())) - margin, 0)
    x1 = min(int(np.ceil(points[:, 0].max().item())) + margin + 1, limit_wh[0])
    y1 = min(int(np.ceil(points[:, 1].max().item())) + margin + 1, limit_wh[1])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _running_min(x: torch.Tensor, side: int) -> torch.Tensor:
    """Minimum over a window of `side` along the last axis, anchor at side // 2, values outside ignored.

    Sparse-table doubling: after k passes each entry holds the minimum of 2**k neighbours; two overlapping
    power-of-two windows then cover any side exactly. log2(side) elementwise passes on any device.
    """
    before = side // 2
    n = x.shape[-1]
    table = F.pad(x, (before, side - 1 - before), value=float("inf"))
    span = 1
    while span * 2 <= side:
        table = torch.minimum(table[..., :-span], table[..., span:])
        span *= 2
    return torch.minimum(table[..., :n], table[..., side - span : side - span + n])


def _erode(mask: torch.Tensor, side: int) -> torch.Tensor:
    """Erosion of (N, 1, H, W) with a side x side square, OpenCV conventions (anchor at side // 2, pixels outside
    the image never win the minimum). A square erosion is separable: rows, then columns."""
    rows = _running_min(mask, side)
    return _running_min(rows.transpose(-1, -2), side).transpose(-1, -2)


def _blur_matrix(n: int, kernel: torch.Tensor) -> torch.Tensor:
    """(n, n) matrix applying a 1-D kernel with mirrored borders (OpenCV's default, without repeating the edge)."""
    half = kernel.numel() // 2
    index = torch.arange(n, device=kernel.device)[:, None] + torch.arange(-half, half + 1, device=kernel.device)
    index = index.abs()
    index = torch.where(index > n - 1, 2 * (n - 1) - index, index).clamp(0, n - 1)
    matrix = torch.zeros(n, n, dtype=kernel.dtype, device=kernel.device)
    return matrix.scatter_add_(1, index, kernel.expand(n, -1).contiguous())


def _gaussian_blur(mask: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, H, W) with mirrored borders, as two banded matrix products (fast on any
    device, unlike single-channel convolutions)."""
    x = torch.arange(size, dtype=torch.float32, device=mask.device) - size // 2
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    height, width = mask.shape[-2:]
    return _blur_matrix(height, kernel) @ mask @ _blur_matrix(width, kernel).T


def _soft_mask(coverage: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From the pasted crop's coverage (N, 1, H, W): the 2x2-eroded mask and the feathered alpha.

    The feather width depends on each face's area, so frames are grouped by it.
    """
    eroded = _erode(coverage, 2)
    area = eroded.double().sum(dim=(1, 2, 3))
    edges = area.sqrt().floor().long() // 20
    alpha = torch.empty_like(eroded)
    for edge in edges.unique().tolist():
        idx = (edges == edge).nonzero().squeeze(1)
        # OpenCV treats the empty kernel that edge 0 gives as its default 3x3 one.
        centre = _erode(eroded[idx], 2 * edge if edge else 3)
        size = 2 * edge + 1
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
        alpha[idx] = _gaussian_blur(centre, size, sigma)
    return eroded, alpha


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 255] to uint8 by truncation, as the published code casts."""
    return images.clamp(0, 255).to(torch.uint8)


def _tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value
    raise InputError(f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}.")


def _check_frames(frames, name: str = "frames") -> torch.Tensor:
    t = _tensor(frames, name)
    if t.ndim != 4 or t.shape[-1] != 3 or t.dtype != torch.uint8:
        raise InputError(
            f"{name} must be uint8 RGB images of shape (N, H, W, 3), got {t.dtype} {tuple(t.shape)}.",
            "Stack the frames of one batch into one array.",
        )
    if t.shape[1] < 2 or t.shape[2] < 2:
        raise InputError(f"{name} are too small to warp: {tuple(t.shape[1:3])}.")
    return t


def _check_mats(mats, count: int) -> torch.Tensor:
    t = _tensor(mats, "mats")
    if t.shape != (count, 2, 3) or not t.is_floating_point():
        raise InputError(
            f"mats must be {count} affine matrices of shape ({count}, 2, 3), got {t.dtype} {tuple(t.shape)}.",
            "Use FaceAligner.matrices(); give one matrix per frame.",
        )
    return t


class FaceAligner:
    """Aligns faces to the published template (SPEC section 5) and pastes generated faces back.

    ``resolution`` is the side R of the square aligned face (256 or 512 for the published models).
    Work runs on ``device``; numpy inputs give numpy outputs, torch inputs give torch outputs on the
    device of the frames given.
    """

    def __init__(self, resolution: int = 256, device: str | torch.device = "cpu"):
        if int(resolution) < 16:
            raise InputError(f"Face resolution must be at least 16 pixels, got {resolution}.")
        self.resolution = int(resolution)
        self.device = torch.device(device)
        ratio = self.resolution / 256 * TEMPLATE_SCALE
        self.template = np.array(TEMPLATE) * ratio
        self.crop_size = (int(CROP_UNITS[0] * ratio), int(CROP_UNITS[1] * ratio))  # (w, h)
        self.last_bias: np.ndarray | None = None
        self._canvas = _Canvas()

    def matrices(self, landmarks3, prev_bias: np.ndarray | None = None) -> np.ndarray:
        """Smoothed source->template affine matrices (N, 2, 3) float64 for N consecutive frames.

        ``landmarks3`` (N, 3, 2) are the rounded eyebrow-left, eyebrow-right and nose points. The
        published smoothing (a quirk) shifts each translation by the difference of the normalised
        nose points, blended 0.2 / 0.8 with the previous frame's; the first frame uses its own
        unless ``prev_bias`` (e.g. ``self.last_bias`` from the previous call) continues a run.
        """
        pts = _tensor(landmarks3, "landmarks3")
        if pts.ndim != 3 or pts.shape[1:] != (3, 2) or pts.shape[0] == 0:
            raise InputError(f"landmarks3 must have shape (N, 3, 2) with N >= 1, got {tuple(pts.shape)}.")
        # Solved on the CPU in float32, the precision of the published implementation.
        src = pts.detach().to("cpu", torch.float32)
        dst = torch.tensor(self.template, dtype=torch.float32).expand_as(src)
        src_c, dst_c = src.mean(dim=1, keepdim=True), dst.mean(dim=1, keepdim=True)
        src_std = (src - src_c).flatten(1).std(dim=1)[:, None, None]  # unbiased, as published
        if not torch.isfinite(src).all() or (src_std == 0).any():
            bad = int(torch.nonzero(~torch.isfinite(src).flatten(1).all(1) | (src_std.flatten() == 0))[0])
            raise InputError(
                f"the three face points of frame {bad} coincide or are not numbers: {src[bad].tolist()}",
                "a face track must give distinct eyebrow and nose points; re-detect or fix the edited track",
            )
        dst_std = (dst - dst_c).flatten(1).std(dim=1)[:, None, None]
        src_n, dst_n = (src - src_c) / src_std, (dst - dst_c) / dst_std
        u, _, vh = torch.linalg.svd(src_n.transpose(1, 2) @ dst_n)
        v = vh.transpose(1, 2).clone()
        flip = torch.linalg.det(v @ u.transpose(1, 2)) < 0
        v[flip, :, -1] = -v[flip, :, -1]
        rotation = v @ u.transpose(1, 2)
        ratio = dst_std / src_std
        shift = dst_c.transpose(1, 2) - ratio * (rotation @ src_c.transpose(1, 2))
        mats = torch.cat([ratio * rotation, shift], dim=2)

        bias = dst_n[:, 2] - src_n[:, 2]
        prev = None if prev_bias is None else torch.as_tensor(np.asarray(prev_bias), dtype=torch.float32)
        if prev is not None and prev.shape != (2,):
            raise InputError(f"prev_bias must be a (2,) vector such as FaceAligner.last_bias, got {tuple(prev.shape)}.")
        for i in range(len(bias)):  # a running blend: each frame depends on the one before
            if prev is not None:
                bias[i] = prev * BIAS_KEEP + bias[i] * (1 - BIAS_KEEP)
            prev = bias[i]
        mats[:, :, 2] += bias
        self.last_bias = prev.numpy().copy()
        return mats.numpy().astype(np.float64)

    @torch.no_grad()
    def crop(self, frames, mats):
        """Warp frames (N, H, W, 3) uint8 into (N, crop_h, crop_w, 3) uint8 crops, grey 127 outside the frame."""
        return self._like(self._crop(frames, mats), frames)

    @torch.no_grad()
    def warp(self, frames, mats):
        """Aligned faces (N, R, R, 3) uint8: the crop resized to R x R with OpenCV Lanczos-4 (aspect not kept)."""
        crops, size = self._crop(frames, mats), self.resolution
        if crops.device.type == "cpu":  # OpenCV itself: on a CPU much faster than the matrix products of its port
            resized = [cv2.resize(crop, (size, size), interpolation=cv2.INTER_LANCZOS4) for crop in crops.numpy()]
            out = torch.from_numpy(np.stack(resized))
        else:
            out = resize_lanczos4(crops.permute(0, 3, 1, 2), (size, size)).permute(0, 2, 3, 1)
        return self._like(out, frames)

    @torch.no_grad()
    def paste(self, frames, faces, mats, *, inplace: bool = False):
        """Paste faces back into frames (N, H, W, 3) uint8 with a feathered edge; returns (N, H, W, 3) uint8.

        ``faces`` are (N, R, R, 3) uint8 or (N, 3, R, R) floats in [-1, 1] (model output). With ``inplace`` the
        result is written into ``frames`` (a writable array or tensor) and returned; else they are left as given.
        Only the faces' box of the frames travels to the aligner's device and back.
        """
        if inplace and isinstance(frames, np.ndarray) and not (frames.flags.c_contiguous and frames.flags.writeable):
            raise InputError("paste(..., inplace=True) writes into the frames: they must be a writable C-contiguous "
                             "array", "pass np.ascontiguousarray(frames), or paste without inplace")
        dst = _check_frames(frames)
        n, height, width = dst.shape[:3]
        m = _check_mats(mats, n).to(self.device, torch.float32)
        face = self._faces_as_unit(faces, n)
        out = dst if inplace else dst.clone()
        inverse = torch.linalg.inv(_homogeneous(m))[:, :2]  # destination -> crop, per frame
        box = _footprint(inverse, self.crop_size, (width, height), PASTE_MARGIN)
        if box is None:  # every face lies outside its frame
            return self._like(out, frames)
        # A few frames at a time: the float temporaries of a whole 16-frame batch at 1080p are each over 32 MB,
        # which the C allocator maps afresh (a page fault per 4 KiB) every time; smaller ones it reuses.
        x0, y0, x1, y1 = box
        step = max(1, _PASTE_SLICE_BYTES // (_PASTE_FLOATS_PER_PIXEL * 4 * (x1 - x0) * (y1 - y0)))
        for s in range(0, n, step):
            self._blend_into(out[s : s + step], face[s : s + step], m[s : s + step], inverse[s : s + step])
        return self._like(out, frames)

    def _blend_into(self, out: torch.Tensor, face: torch.Tensor, m: torch.Tensor, inverse: torch.Tensor) -> None:
        """Paste unit faces (n, 3, R, R) into frames `out` (n, H, W, 3) uint8 through matrices m (their inverses
        given), in place; the box is these frames' own, tighter than the whole batch's."""
        height, width = out.shape[1:3]
        crop_w, crop_h = self.crop_size
        box = _footprint(inverse, (crop_w, crop_h), (width, height), PASTE_MARGIN)
        if box is None:
            return
        x0, y0, x1, y1 = box
        face = F.interpolate(face, size=(crop_h, crop_w), mode="bicubic", antialias=True, align_corners=False)
        back, coverage = _sample_region(face, m, box)
        # The grey fill lands only where alpha is zero; kept in model units as published.
        back = ((back + (1 - coverage) * FILL) / 2 + 0.5).clamp(0, 1) * 255
        eroded, alpha = _soft_mask(coverage)
        region = out[:, y0:y1, x0:x1].to(self.device).permute(0, 3, 1, 2).float()
        blended = alpha * (eroded * back) + (1 - alpha) * region
        out[:, y0:y1, x0:x1] = _to_uint8(blended).permute(0, 2, 3, 1).to(out.device)

    def _crop(self, frames, mats) -> torch.Tensor:
        """Crops as (N, crop_h, crop_w, 3) uint8 on the device."""
        src = _check_frames(frames)
        m = _check_mats(mats, src.shape[0]).to(self.device, torch.float32)
        crop_w, crop_h = self.crop_size
        return _warp(src, m, (crop_h, crop_w), self._canvas)

    def _faces_as_unit(self, faces, count: int) -> torch.Tensor:
        """Faces as (N, 3, R, R) float32 in [-1, 1] on the device."""
        t = _tensor(faces, "faces")
        size = self.resolution
        if t.dtype == torch.uint8 and t.shape == (count, size, size, 3):
            return t.to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
        if t.is_floating_point() and t.shape == (count, 3, size, size):
            return t.to(self.device, torch.float32)
        raise InputError(
            f"faces must be ({count}, {size}, {size}, 3) uint8 or ({count}, 3, {size}, {size}) floats in [-1, 1], "
            f"got {t.dtype} {tuple(t.shape)}.",
            "Give one face per frame at the aligner's resolution.",
        )

    @staticmethod
    def _like(result: torch.Tensor, reference):
        """Return ``result`` as numpy when ``reference`` was numpy, else on ``reference``'s device."""
        if isinstance(reference, np.ndarray):
            return result.cpu().numpy()
        return result.to(reference.device)
