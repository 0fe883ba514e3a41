"""The random-weight writers for the evaluation models: real formats that the loaders and `weights.resolve` accept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentsync import weights
from latentsync.evaluation import load_hyperiqa, load_s3fd, load_syncnet_v2
from latentsync.testing import write_random_eval_models

# On this shared CI-sized machine, one thread per test process is faster than contending for two.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_written_files_load_and_run(tmp_path):
    paths = write_random_eval_models(tmp_path, seed=3)
    assert set(paths) == {"syncnet_v2", "s3fd", "hyperiqa"}
    for name, path in paths.items():
        assert path.stat().st_size < 2_000_000, name  # compact storage
    resolved = weights.resolve(["syncnet_v2", "s3fd", "hyperiqa"], "1.5", tmp_path, offline=True)
    assert {k: v.resolve() for k, v in resolved.items()} == {k: v.resolve() for k, v in paths.items()}
    raw = torch.load(paths["syncnet_v2"], weights_only=True)
    assert not any(k.endswith("num_batches_tracked") for k in raw)  # as the published file
    assert not raw["netcnnlip.0.weight"].is_contiguous()  # large tensors are strided views, as in the parity files

    syncnet = load_syncnet_v2(paths["syncnet_v2"])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        lip = syncnet.forward_lip(torch.rand(1, 3, 5, 224, 224, generator=gen) * 255)
        aud = syncnet.forward_aud(torch.randn(2, 1, 13, 20, generator=gen) * 10)
    assert lip.shape == (1, 1024) and aud.shape == (2, 1024)
    assert torch.isfinite(lip).all() and torch.isfinite(aud).all() and not torch.allclose(aud[0], aud[1])

    detector = load_s3fd(paths["s3fd"])
    frames = np.random.default_rng(0).integers(0, 256, (2, 160, 128, 3), dtype=np.uint8)
    found = detector.detect_batch(list(frames))  # the published 0.9 threshold: a few large, stable boxes
    assert all(1 <= len(boxes) <= 10 and np.isfinite(boxes).all() for boxes in found)
    assert np.allclose(found[0][:, :4], found[1][:, :4], atol=20)

    iqa = load_hyperiqa(paths["hyperiqa"])  # its forward pass is covered by the parity test (test_hyperiqa.py)
    stored = torch.load(paths["hyperiqa"], weights_only=True)
    assert len(stored) == 355 and torch.equal(iqa.net.fc1w_conv.weight, stored["fc1w_conv.weight"])


def test_unknown_component_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown components"):
        write_random_eval_models(tmp_path, components=("i3d",))
