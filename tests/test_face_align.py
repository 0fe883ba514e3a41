"""Face alignment and paste-back: parity with the published outputs (golden affine_io) and behaviour checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import golden, psnr
from latentsync.errors import InputError
from latentsync.face import align as align_module
from latentsync.face.align import FaceAligner
from latentsync.face.resize import resize_lanczos4

# SPEC tolerance for images: at most 1 grey level off on 99.9 % of the pixels.
MAX_OFF_BY_MORE_THAN_ONE = 0.1  # percent


@pytest.fixture(scope="module")
def gold() -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in golden("affine_io").items()}


def _frames(gold) -> np.ndarray:
    """The 6 frames of the golden run: frame 0 is frame_first, frames 1-5 are frame_last."""
    return np.stack([gold["frame_first"]] + [gold["frame_last"]] * 5)


def _compare(name: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, name
    err = np.abs(got.astype(np.int16) - want.astype(np.int16))
    over = float((err > 1).mean() * 100)
    off = (err > 0).mean() * 100
    print(f"{name}: max abs err {err.max()}, {over:.4f} % of values off by > 1, {off:.3f} % off at all")
    assert over <= MAX_OFF_BY_MORE_THAN_ONE, name


@pytest.mark.parametrize("res", [256, 512])
def test_golden_parity(gold, res):
    al = FaceAligner(res)
    assert al.crop_size == gold[f"r{res}_raw_crop_last"].shape[1::-1]

    mats = al.matrices(gold["landmarks3"])
    want = gold[f"r{res}_matrices"].astype(np.float64)
    err = np.abs(mats - want)
    print(f"r{res} matrices: max abs err {err.max():.3g} (translation ~{np.abs(want[:, :, 2]).max():.0f})")
    assert mats.dtype == np.float64 and mats.shape == (6, 2, 3)
    # The golden run solved in float32: allow 1e-4 plus a few float32 steps of the ~600-pixel translations.
    assert np.all(err <= 1e-4 + 4e-7 * np.abs(want))
    assert err[:, :, :2].max() < 1e-6

    frames = _frames(gold)
    _compare(f"r{res} raw_crop_last", al.crop(frames, mats)[5], gold[f"r{res}_raw_crop_last"])
    aligned = al.warp(frames, mats)
    _compare(f"r{res} aligned_first", aligned[0], gold[f"r{res}_aligned_first"])
    _compare(f"r{res} aligned_last", aligned[5], gold[f"r{res}_aligned_last"])

    restored = al.paste(gold["frame_last"][None], gold[f"r{res}_generated_face"][None], mats[5:])
    _compare(f"r{res} restored_last", restored[0], gold[f"r{res}_restored_last"])


def test_lanczos4_matches_opencv():
    rng = np.random.default_rng(0)
    for h, w, out_h, out_w in [(280, 210, 256, 256), (101, 77, 33, 250), (9, 7, 40, 5)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        want = cv2.resize(img, (out_w, out_h), interpolation=cv2.INTER_LANCZOS4)
        got = resize_lanczos4(torch.from_numpy(img).permute(2, 0, 1)[None], (out_h, out_w))[0].permute(1, 2, 0)
        np.testing.assert_array_equal(got.numpy(), want)  # bit-exact on 8-bit images
        img_f = img.astype(np.float32) / 255
        want_f = cv2.resize(img_f, (out_w, out_h), interpolation=cv2.INTER_LANCZOS4)
        got_f = resize_lanczos4(torch.from_numpy(img_f).permute(2, 0, 1)[None], (out_h, out_w))[0].permute(1, 2, 0)
        np.testing.assert_allclose(got_f.numpy(), want_f, atol=1e-5)


def _crop_coords(mat: np.ndarray, height: int, width: int) -> np.ndarray:
    """Where each frame pixel lands in the crop: (H, W, 2) crop x, y."""
    ys, xs = np.mgrid[:height, :width]
    pts = np.stack([xs, ys, np.ones_like(xs)], axis=-1).astype(np.float64)
    return pts @ mat.T


def test_round_trip_keeps_the_face(gold):
    al = FaceAligner(256)
    frame = gold["frame_last"][None]
    mats = al.matrices(gold["landmarks3"][5:])
    out = al.paste(frame, al.warp(frame, mats), mats)[0]
    crop_w, crop_h = al.crop_size
    xy = _crop_coords(mats[0], *frame.shape[1:3])
    x, y = xy[..., 0] / crop_w, xy[..., 1] / crop_h
    inside = (x > 0.15) & (x < 0.85) & (y > 0.15) & (y < 0.85)
    quality = psnr(out[inside], frame[0][inside])
    print(f"round trip PSNR inside the face: {quality:.2f} dB over {inside.sum()} pixels")
    assert quality >= 35


def test_input_forms_agree(gold):
    al = FaceAligner(256)
    frames = _frames(gold)[3:]
    mats = al.matrices(gold["landmarks3"][3:])
    aligned = al.warp(frames, mats)
    assert isinstance(aligned, np.ndarray) and aligned.shape == (3, 256, 256, 3) and aligned.dtype == np.uint8

    # numpy and torch give the same, and torch stays torch
    aligned_t = al.warp(torch.from_numpy(frames), torch.from_numpy(mats))
    assert isinstance(aligned_t, torch.Tensor)
    np.testing.assert_array_equal(aligned_t.numpy(), aligned)
    np.testing.assert_array_equal(al.matrices(torch.from_numpy(gold["landmarks3"][3:])), mats)

    # uint8 faces and their (N, 3, R, R) [-1, 1] form paste the same
    faces = np.ascontiguousarray(aligned[:, ::-1])  # upside down, so the paste visibly changes the frame
    pasted = al.paste(frames, faces, mats)
    as_unit = torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 127.5 - 1
    np.testing.assert_array_equal(al.paste(torch.from_numpy(frames), as_unit, mats).numpy(), pasted)
    assert (pasted != frames).any()

    # batched == frame by frame (smoothing carried over explicitly)
    for i in range(3):
        mat_i = al.matrices(gold["landmarks3"][3 + i : 4 + i], prev_bias=None if i == 0 else bias)
        bias = al.last_bias
        np.testing.assert_array_equal(mat_i, mats[i : i + 1])
        np.testing.assert_array_equal(al.warp(frames[i : i + 1], mat_i)[0], aligned[i])
        np.testing.assert_array_equal(al.paste(frames[i : i + 1], faces[i : i + 1], mat_i)[0], pasted[i])


def test_paste_in_place_and_in_slices_gives_the_same_frames(gold, monkeypatch):
    """In place, the result lands in the frames given (no copy of them); pasted a frame at a time (as 4K frames
    are, to keep temporaries small), the frames come out the same as pasted all at once."""
    al = FaceAligner(256)
    frames = _frames(gold)[3:]
    mats = al.matrices(gold["landmarks3"][3:])
    faces = np.ascontiguousarray(al.warp(frames, mats)[:, ::-1])
    before = frames.copy()
    pasted = al.paste(frames, faces, mats)
    np.testing.assert_array_equal(frames, before)  # not in place: the frames are left as given

    monkeypatch.setattr(align_module, "_PASTE_SLICE_BYTES", 1)  # one frame per slice
    target = frames.copy()
    assert al.paste(target, faces, mats, inplace=True) is not None
    np.testing.assert_array_equal(target, pasted)
    tensor = torch.from_numpy(frames.copy())
    al.paste(tensor, faces, mats, inplace=True)
    np.testing.assert_array_equal(tensor.numpy(), pasted)
    with pytest.raises(InputError, match="writable C-contiguous"):
        al.paste(np.asfortranarray(frames), faces, mats, inplace=True)


def test_face_half_outside_the_frame(gold):
    al = FaceAligner(256)
    frame = gold["frame_last"][None]
    # Move the face so its centre sits on the left edge of the frame.
    landmarks = gold["landmarks3"][5:] - np.array([gold["landmarks3"][5, :, 0].mean(), 0], np.float32)
    mats = al.matrices(landmarks)
    crop = al.crop(frame, mats)[0]
    crop_w, crop_h = al.crop_size
    # crop pixels whose source lies a full pixel left of the frame are pure fill
    inv = cv2.invertAffineTransform(mats[0])
    src_x = _crop_coords(inv, crop_h, crop_w)[..., 0]
    assert 0.3 < (src_x < -1).mean() < 0.7
    assert (crop[src_x < -1] == 127).all()
    assert (crop[src_x > 0] != 127).any()

    face = al.warp(frame, mats)
    out = al.paste(frame, np.ascontiguousarray(face[:, ::-1]), mats)[0]
    xy = _crop_coords(mats[0], *frame.shape[1:3])
    # The published feather reaches one pixel past the crop's right and bottom edges: keep a margin.
    outside = (xy[..., 0] < -3) | (xy[..., 0] > crop_w + 2) | (xy[..., 1] < -3) | (xy[..., 1] > crop_h + 2)
    np.testing.assert_array_equal(out[outside], frame[0][outside])
    assert (out[~outside] != frame[0][~outside]).any()


def test_bad_inputs_raise_input_error(gold):
    al = FaceAligner(256)
    frames = _frames(gold)[:2]
    mats = al.matrices(gold["landmarks3"][:2])
    faces = al.warp(frames, mats)
    bad_calls = [
        lambda: al.matrices(gold["landmarks3"][:, :2]),  # two points
        lambda: al.matrices([[1, 2], [3, 4], [5, 6]]),  # a list
        lambda: al.warp(frames[0], mats[:1]),  # no batch axis
        lambda: al.warp(frames.astype(np.float32), mats),  # not uint8
        lambda: al.warp(frames[..., :2], mats),  # two channels
        lambda: al.warp(frames, mats[:1]),  # one matrix for two frames
        lambda: al.warp(frames, mats[:, :, :2]),  # 2x2 matrices
        lambda: al.paste(frames, faces[:, :128], mats),  # wrong face size
        lambda: al.paste(frames, faces.astype(np.float32), mats),  # float faces must be channels-first
        lambda: al.paste(frames, faces[:1], mats),  # one face for two frames
    ]
    for call in bad_calls:
        with pytest.raises(InputError) as info:
            call()
        assert "must" in info.value.message


@pytest.mark.gpu
def test_gpu_matches_cpu(gold):
    frames = _frames(gold)
    cpu, gpu = FaceAligner(512), FaceAligner(512, device="cuda")
    mats = cpu.matrices(gold["landmarks3"])
    faces = cpu.warp(frames, mats)
    _compare("gpu aligned", gpu.warp(torch.from_numpy(frames).cuda(), mats).cpu().numpy(), faces)
    flipped = np.ascontiguousarray(faces[:, ::-1])
    _compare("gpu pasted", gpu.paste(frames, flipped, mats), cpu.paste(frames, flipped, mats))


@pytest.mark.parametrize("side", [2, 3, 8, 27, 44])
def test_feather_erosion_and_blur_follow_opencv(side):
    from latentsync.face.align import _erode, _gaussian_blur

    rng = np.random.default_rng(side)
    mask = (rng.random((61, 47)) > 0.2).astype(np.float32) * rng.random((61, 47)).astype(np.float32)
    eroded = cv2.erode(mask, np.ones((side, side), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=np.inf)
    ours = _erode(torch.from_numpy(mask)[None, None], side)[0, 0].numpy()
    np.testing.assert_array_equal(ours, eroded)
    size = 2 * side + 1
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    blurred = cv2.GaussianBlur(mask, (size, size), sigma)
    ours = _gaussian_blur(torch.from_numpy(mask)[None, None], size, sigma)[0, 0].numpy()
    assert np.abs(ours - blurred).max() < 1e-5


def test_degenerate_points_are_a_clear_error():
    points = np.array([[[10, 10], [10, 10], [10, 10]], [[10, 20], [50, 20], [30, 40]]], np.float32)
    with pytest.raises(InputError, match="frame 0 coincide"):
        FaceAligner(256).matrices(points)
