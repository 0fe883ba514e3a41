"""LPIPS-VGG: file formats (torchvision VGG16 + lpips heads), the distance's basic properties, full-size key layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import MEDIA
from latentsync.errors import CheckpointError
from latentsync.media import read_frames
from latentsync.models import lpips
from latentsync.models.lpips import LPIPS, VGG16Features, load_lpips

TINY_STAGES = ((8, 8), (16, 16), (16, 16, 16), (32, 32, 32), (32, 32, 32))

# torchvision vgg16 `features.*`: index -> (out, in) channels of each 3x3 convolution.
TORCHVISION_VGG16_CONVS = {
    0: (64, 3), 2: (64, 64),
    5: (128, 64), 7: (128, 128),
    10: (256, 128), 12: (256, 256), 14: (256, 256),
    17: (512, 256), 19: (512, 512), 21: (512, 512),
    24: (512, 512), 26: (512, 512), 28: (512, 512),
}  # fmt: skip
LPIPS_LIN_SHAPES = {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate((64, 128, 256, 512, 512))}


pytestmark = pytest.mark.usefixtures("one_thread")


def _write_published_files(model: LPIPS, folder) -> tuple:
    """Write a model's weights as torchvision's vgg16 file (with a classifier) and the lpips heads file."""
    vgg = {k: v.clone() for k, v in model.vgg.state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(4, 4)  # present in the real file, must be ignored
    lins = {f"lin{i}.model.1.weight": lin.weight.detach().clone() for i, lin in enumerate(model.lins)}
    vgg_path, lin_path = folder / "vgg16-397923af.pth", folder / "vgg.pth"
    torch.save(vgg, vgg_path)
    torch.save(lins, lin_path)
    return vgg_path, lin_path


def _tiny_lpips(seed: int = 0) -> LPIPS:
    torch.manual_seed(seed)
    model = LPIPS(TINY_STAGES)
    for lin in model.lins:  # LPIPS heads are non-negative (clamped while they were trained)
        lin.weight.data.abs_()
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def face() -> torch.Tensor:
    """A real 128 x 128 frame crop, (1, 3, 128, 128) in [-1, 1]."""
    _, frame = next(read_frames(MEDIA / "demo1_360p.mp4", indices=[10]))
    h, w = frame.shape[:2]
    crop = cv2.resize(frame[:, (w - h) // 2 : (w + h) // 2], (128, 128), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1


def test_round_trip_through_published_file_formats(tmp_path):
    model = _tiny_lpips()
    vgg_path, lin_path = _write_published_files(model, tmp_path)
    loaded = load_lpips(vgg_path, lin_path, TINY_STAGES)
    assert not any(p.requires_grad for p in loaded.parameters())
    a, b = torch.rand(2, 3, 32, 48) * 2 - 1, torch.rand(2, 3, 32, 48) * 2 - 1
    torch.testing.assert_close(loaded(a, b), model(a, b), rtol=0, atol=0)


def test_wrong_head_key_is_reported(tmp_path):
    vgg_path, lin_path = _write_published_files(_tiny_lpips(), tmp_path)
    torch.save({"lin0.weight": torch.zeros(1, 8, 1, 1)}, lin_path)
    with pytest.raises(CheckpointError, match="lin0.weight"):
        load_lpips(vgg_path, lin_path, TINY_STAGES)


def test_identical_images_give_zero(face):
    model = _tiny_lpips()
    assert model(face, face).abs().max().item() < 1e-6


def test_distance_grows_with_distortion(face):
    model = _tiny_lpips()
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(face.shape, generator=g)
    noisy = [model(face, (face + s * noise).clamp(-1, 1)).item() for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert noisy == sorted(noisy) and noisy[0] > 0, noisy

    image = ((face[0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8)
    blurred = []
    for k in (3, 7, 15, 31):
        b = cv2.GaussianBlur(image, (k, k), 0)
        b = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 127.5 - 1
        blurred.append(model(face, b).item())
    assert blurred == sorted(blurred) and blurred[0] > 0, blurred


def test_distance_is_per_image_and_differentiable(face):
    model = _tiny_lpips()
    other = face.flip(-1).clone().requires_grad_(True)
    d = model(torch.cat([face, face]), torch.cat([face, other]))
    assert d.shape == (2,) and d[0].item() < 1e-6 < d[1].item()
    d.sum().backward()
    assert other.grad is not None and other.grad.abs().sum() > 0


def test_full_size_vgg16_has_torchvision_keys():
    with torch.device("meta"):
        vgg = VGG16Features()
        model = LPIPS()
    expected = {}
    for index, (out_ch, in_ch) in TORCHVISION_VGG16_CONVS.items():
        expected[f"features.{index}.weight"] = (out_ch, in_ch, 3, 3)
        expected[f"features.{index}.bias"] = (out_ch,)
    assert {k: tuple(v.shape) for k, v in vgg.state_dict().items()} == expected
    heads = {f"lin{i}.model.1.weight": tuple(lin.weight.shape) for i, lin in enumerate(model.lins)}
    assert heads == LPIPS_LIN_SHAPES
    assert vgg.taps == [3, 8, 15, 22, 29]  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's indexing


def test_weights_are_adopted_in_the_requested_dtype(tmp_path, monkeypatch):
    """The tensors are cast as they are adopted: a half-precision model never exists as a float32 copy first."""
    vgg_path, lin_path = _write_published_files(_tiny_lpips(), tmp_path)
    real, dtypes = lpips.build_with_weights, []

    def spy(factory, state, what, dtype=torch.float32):
        dtypes.append(dtype)
        return real(factory, state, what, dtype)

    monkeypatch.setattr(lpips, "build_with_weights", spy)
    loaded = load_lpips(vgg_path, lin_path, TINY_STAGES, dtype=torch.float16)
    assert dtypes == [torch.float16] and all(p.dtype == torch.float16 for p in loaded.parameters())
