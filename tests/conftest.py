"""Shared test helpers: where the fixtures live, and skipping GPU tests where there is no CUDA device."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
MEDIA = DATA / "media"
AUDIO = DATA / "audio"


def golden(name: str) -> dict[str, torch.Tensor]:
    """A golden safetensors file (tests/data/golden/<name>.safetensors) as a dict of tensors."""
    return load_file(str(GOLDEN / f"{name}.safetensors"))


def psnr(a, b) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images (or pixel sets); inf when identical."""
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def fixture_frames(name: str, limit: int | None = None) -> list[np.ndarray]:
    """RGB frames of a test video in tests/data/media, as stored (no resampling; at most `limit`)."""
    with av.open(str(MEDIA / name)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if limit is not None and len(frames) == limit:
                break
    return frames


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write into: a read-only one, or for root (who may write anywhere) /sys."""
    if os.geteuid() == 0:
        return Path("/sys")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return locked


def key_list(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) per line of a `*_keys.txt` list of a published checkpoint (tab-separated name, shape[, dtype])."""
    rows = []
    for line in path.read_text().splitlines():
        if line:
            key, shape = line.split("\t")[:2]
            rows.append((key, tuple(int(d) for d in shape.strip("()").split(",") if d.strip())))
    return rows


def golden_pipeline():
    """The pipeline of the golden U-Net and VAE at the golden pipeline's resolution (parity vectors' models)."""
    from diffusers import AutoencoderKL

    from latentsync.checkpoint import load_state_dict
    from latentsync.models import load_scheduler, load_unet
    from latentsync.pipeline import LipSyncPipeline

    unet = load_unet(golden_config("unet_config"), GOLDEN / "unet_weights.safetensors")
    vae = AutoencoderKL.from_config(golden_config("vae_config"))
    vae.load_state_dict({k: v.float() for k, v in load_state_dict(GOLDEN / "vae_weights.safetensors").items()})
    resolution = golden_config("pipeline_config")["resolution"]
    return LipSyncPipeline(unet=unet, vae=vae, scheduler=load_scheduler(), resolution=resolution)


def golden_config(name: str) -> dict:
    return json.loads((GOLDEN / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny-model tests on one thread: for small tensors, thread start-up costs more than it saves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
