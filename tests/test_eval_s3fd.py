"""S3FD against the published detector's parity vectors (golden/eval/s3fd_io)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import DATA, key_list
from latentsync.errors import CheckpointError, InputError
from latentsync.evaluation import load_s3fd
from latentsync.evaluation.s3fd import S3FDNet, candidates, detection_stage, final_boxes, prior_boxes, scaled_size

# On this shared CI-sized machine, one thread per test process is faster than contending for two.
pytestmark = pytest.mark.usefixtures("one_thread")

EVAL = DATA / "golden" / "eval"


@pytest.fixture(scope="module")
def det():
    return load_s3fd(EVAL / "sfd_face_random.pth")


@pytest.fixture(scope="module")
def ref():
    return load_file(str(EVAL / "s3fd_io.safetensors")), json.loads((EVAL / "s3fd_io.json").read_text())


def test_full_size_keys_match_published_file():
    with torch.device("meta"):
        net = S3FDNet()
    assert [(k, tuple(v.shape)) for k, v in net.state_dict().items()] == key_list(EVAL / "sfd_face_keys.txt")


def test_wrong_file_is_rejected(tmp_path):
    state = torch.load(EVAL / "sfd_face_random.pth", weights_only=True)
    state["conf.0.weight"] = state["conf.0.weight"][:2]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="conf.0.weight"):
        load_s3fd(tmp_path / "bad.pth")


def test_network_and_detection_stage_match(det, ref):
    data, meta = ref
    frame = data["frame_rgb_uint8"].numpy()
    assert scaled_size(270, 482, 0.25) == (68, 120)  # rounded half to even, as OpenCV does
    x = det.prepare([frame], meta["scale"])
    assert tuple(x.shape[2:]) == tuple(meta["net_input_hw"])
    assert (x - data["net_input"]).abs().max() == 0
    with torch.no_grad():
        loc, conf, heads = det.net(x)
    assert (loc - data["loc"]).abs().max() < 1e-4
    assert (conf - data["conf_softmax"]).abs().max() < 1e-4
    priors = prior_boxes(tuple(x.shape[2:]), heads)
    assert priors.shape == (meta["num_priors"], 4) and (priors - data["priors"]).abs().max() < 1e-6
    rows = detection_stage(loc, conf, priors)[0]
    published = data["detections"][0, 1].numpy()
    assert np.all(published[len(rows):] == 0) and np.all(published[: len(rows), 0] > 0)  # same count of rows
    assert np.abs(rows[:, 0] - published[: len(rows), 0]).max() < 1e-4
    assert np.abs(rows[:, 1:] - published[: len(rows), 1:]).max() < 1e-4
    size = np.array([270, 482, 270, 482], np.float32)
    for threshold, tag in ((0.9, "090"), (0.5, "050")):
        cands = candidates(rows, threshold, size)
        expected = data[f"candidates_conf{tag}"].numpy()
        assert cands.shape == expected.shape == (meta["num_candidates"][str(threshold)], 5)
        assert np.abs(cands[:, :4] - expected[:, :4]).max() < 1e-2 and np.abs(cands[:, 4] - expected[:, 4]).max() < 1e-4
        boxes = final_boxes(rows, threshold, size)
        assert len(boxes) == meta["num_boxes"][str(threshold)]


@pytest.mark.parametrize("threshold,tag", [(0.9, "090"), (0.5, "050")])
def test_detect_matches_published_boxes(det, ref, threshold, tag):
    data, _ = ref
    frame = data["frame_rgb_uint8"].numpy()
    before = frame.copy()
    boxes = det.detect(frame, threshold=threshold, scale=0.25)
    expected = data[f"bboxes_conf{tag}"].numpy()
    assert boxes.dtype == np.float64 and boxes.shape == expected.shape
    assert np.abs(boxes[:, :4] - expected[:, :4]).max() < 1e-2
    assert np.abs(boxes[:, 4] - expected[:, 4]).max() < 1e-4
    assert np.array_equal(frame, before)


def test_batched_frames_equal_single_frames(det, ref):
    frame = ref[0]["frame_rgb_uint8"].numpy()
    flipped = np.ascontiguousarray(frame[:, ::-1])
    batched = det.detect_batch([frame, flipped], threshold=0.5)
    assert np.abs(batched[0] - ref[0]["bboxes_conf050"].numpy()).max() < 1e-2
    single = det.detect(flipped, threshold=0.5)
    assert batched[1].shape == single.shape and np.allclose(batched[1], single, atol=1e-3)


def test_no_candidates_give_empty_results():
    priors = prior_boxes((32, 32), [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1), (1, 1)])
    loc = torch.zeros(1, len(priors), 4)
    conf = torch.tensor([1.0, 0.0]).repeat(1, len(priors), 1)  # background everywhere: nothing above 0.05
    rows = detection_stage(loc, conf, priors)[0]
    assert rows.shape == (0, 5)
    assert final_boxes(rows, 0.9, np.array([128, 128, 128, 128], np.float32)).shape == (0, 5)


def test_bad_frames_are_rejected(det):
    with pytest.raises(InputError, match="uint8 RGB"):
        det.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(InputError, match="differ in size"):
        det.detect_batch([np.zeros((64, 64, 3), np.uint8), np.zeros((64, 80, 3), np.uint8)])
    with pytest.raises(InputError, match="too small"):
        det.detect(np.zeros((96, 200, 3), np.uint8))  # 24 px high at scale 0.25


@pytest.mark.gpu
def test_detect_on_cuda_matches(ref):
    data, _ = ref
    det = load_s3fd(EVAL / "sfd_face_random.pth", device="cuda")
    boxes = det.detect(data["frame_rgb_uint8"].numpy(), threshold=0.9)
    expected = data["bboxes_conf090"].numpy()
    assert boxes.shape == expected.shape and np.abs(boxes[:, :4] - expected[:, :4]).max() < 1e-2
