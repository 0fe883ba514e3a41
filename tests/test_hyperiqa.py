"""HyperIQA against the published visual-quality filter's parity vectors (golden/eval/hyperiqa_io)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import DATA, MEDIA, key_list
from latentsync.errors import CheckpointError, InputError
from latentsync.evaluation import load_hyperiqa
from latentsync.evaluation.hyperiqa import HyperNet, KEEP_THRESHOLD, iqa_frame_indices, prepare_frames, read_iqa_frames, target_scores
from latentsync.media import read_frames

# On this shared CI-sized machine, one thread per test process is faster than contending for two.
pytestmark = pytest.mark.usefixtures("one_thread")

EVAL = DATA / "golden" / "eval"


@pytest.fixture(scope="module")
def iqa():
    return load_hyperiqa(EVAL / "koniq_random.pkl")


@pytest.fixture(scope="module")
def ref():
    return load_file(str(EVAL / "hyperiqa_io.safetensors")), json.loads((EVAL / "hyperiqa_io.json").read_text())


def test_full_size_keys_match_published_file():
    with torch.device("meta"):
        net = HyperNet()
    assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == key_list(EVAL / "hyperiqa_keys.txt")


def test_wrong_file_is_rejected(tmp_path):
    state = torch.load(EVAL / "koniq_random.pkl", weights_only=True)
    del state["fc5b_fc.bias"]
    torch.save(state, tmp_path / "bad.pkl")
    with pytest.raises(CheckpointError, match="fc5b_fc.bias"):
        load_hyperiqa(tmp_path / "bad.pkl")


def test_scores_match_published_filter(iqa, ref):
    data, meta = ref
    frames = data["frames_rgb_uint8"].numpy()
    before = frames.copy()
    seen = {}  # one pass through the public entry point; hooks keep the network's input and outputs
    hooks = [iqa.net.register_forward_pre_hook(lambda m, args: seen.update(input=args[0])),
             iqa.net.register_forward_hook(lambda m, args, out: seen.update(out))]
    try:
        score = iqa.score(frames)
    finally:
        for hook in hooks:
            hook.remove()
    assert seen["input"].shape == (3, 3, 224, 224)
    assert (seen["input"].double().mean((2, 3)) - data["model_input_channel_mean"]).abs().max() < 1e-5
    assert torch.equal(seen["input"], prepare_frames(frames))
    for name, value in data.items():
        if name.startswith("paras."):
            got = seen[name.removeprefix("paras.")]
            # 1e-4 absolute, plus float32 rounding of values up to ~12 (thread counts change the summation order)
            torch.testing.assert_close(got, value, rtol=1e-5, atol=1e-4, msg=name)
    params = {k: v for k, v in seen.items() if k != "input"}
    assert np.abs(target_scores(params).numpy() - data["per_crop_score"].numpy()).max() < 1e-3
    assert abs(score - meta["score"]) < 1e-3 and (score >= KEEP_THRESHOLD) == meta["kept"]
    assert np.array_equal(frames, before)


def test_frames_picked_as_published():
    assert iqa_frame_indices(125) == [0, 62, 124]
    assert iqa_frame_indices(1) == [0, 0, 0]
    picked = read_iqa_frames(MEDIA / "demo1_360p.mp4")  # 50 frames at 25 fps
    expected = np.stack([f for _, f in read_frames(MEDIA / "demo1_360p.mp4", 25, [0, 25, 49])])
    assert picked.shape == (3, 640, 360, 3) and np.array_equal(picked, expected)


def test_bad_frames_are_rejected():
    with pytest.raises(InputError, match="at least 224"):
        prepare_frames(np.zeros((3, 200, 256, 3), np.uint8))
    with pytest.raises(InputError, match="uint8 RGB"):
        prepare_frames(np.zeros((3, 256, 256, 3), np.float32))


@pytest.mark.gpu
def test_scores_on_cuda_match(ref):
    data, meta = ref
    iqa = load_hyperiqa(EVAL / "koniq_random.pkl", device="cuda")
    assert abs(iqa.score(data["frames_rgb_uint8"].numpy()) - meta["score"]) < 1e-3
