"""SyncNet v2, its MFCC and Sync-C / Sync-D against the published evaluation's parity vectors (golden/eval)."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import DATA, key_list
from latentsync.errors import CheckpointError, InputError
from latentsync.evaluation import load_syncnet_v2, mfcc, sync_confidence
from latentsync.evaluation.sync import SyncResult, combine_tracks, num_windows, sync_from_embeddings
from latentsync.evaluation.syncnet_v2 import SyncNetV2

# On this shared CI-sized machine, one thread per test process is faster than contending for two.
pytestmark = pytest.mark.usefixtures("one_thread")

EVAL = DATA / "golden" / "eval"
WEIGHTS = EVAL / "syncnet_v2_random.model"


def eval_frames() -> np.ndarray:
    """The 75 BGR crops the published evaluation read (stored losslessly as a 5 x 15 WebP grid)."""
    grid = cv2.imread(str(EVAL / "syncnet_eval_frames.webp"))
    return np.ascontiguousarray(grid.reshape(5, 224, 15, 224, 3).transpose(0, 2, 1, 3, 4).reshape(75, 224, 224, 3))


@pytest.fixture(scope="module")
def net():
    return load_syncnet_v2(WEIGHTS)


@pytest.fixture(scope="module")
def evaluated():
    return load_file(str(EVAL / "syncnet_eval.safetensors")), json.loads((EVAL / "syncnet_eval.json").read_text())


def test_package_import_is_light_and_exports_the_api():
    code = ("import sys, latentsync.evaluation as e; assert 'torch' not in sys.modules; "
            "print(sorted(e.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(sorted([
        "load_syncnet_v2", "load_s3fd", "load_hyperiqa", "mfcc", "sync_confidence", "score_video",
        "evaluate", "SyncResult", "CombinedSync", "FaceTrack", "TrackSync", "VideoSync"]))


def test_full_size_keys_match_published_file():
    with torch.device("meta"):
        model = SyncNetV2()
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert ours == key_list(EVAL / "syncnet_v2_keys.txt")


def test_loader_tolerates_counters_and_rejects_missing(tmp_path):
    state = torch.load(WEIGHTS, weights_only=True)
    with_counters = {**state, "netcnnaud.1.num_batches_tracked": torch.tensor(7)}
    torch.save(with_counters, tmp_path / "counters.model")
    loaded = load_syncnet_v2(tmp_path / "counters.model")
    assert torch.equal(loaded.netcnnaud[1].running_mean, state["netcnnaud.1.running_mean"])
    del state["netfclip.3.bias"]
    torch.save(state, tmp_path / "missing.model")
    with pytest.raises(CheckpointError, match="netfclip.3.bias"):
        load_syncnet_v2(tmp_path / "missing.model")


def test_embeddings_match(net):
    ref = load_file(str(EVAL / "syncnet_forward.safetensors"))
    frames = eval_frames()
    lip_in = torch.stack([torch.from_numpy(frames[s : s + 5]).permute(3, 0, 1, 2).float() for s in ref["window_start"].tolist()])
    # layout check: batch, BGR, time, H, W (the stored sums were accumulated in float32)
    torch.testing.assert_close(lip_in.double().sum((1, 2, 3, 4)), ref["lip_input_sum"], rtol=1e-6, atol=0)
    with torch.no_grad():
        assert (net.forward_lip(lip_in) - ref["lip_embed"]).abs().max() < 1e-4
        assert (net.forward_aud(ref["mfcc_input"]) - ref["aud_embed"]).abs().max() < 1e-4


def test_mfcc_matches_python_speech_features():
    ref = load_file(str(EVAL / "syncnet_mfcc.safetensors"))
    samples = ref["audio_int16"].numpy()
    ours = mfcc(samples)
    assert ours.shape == (329, 13) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, ref["mfcc_raw"].numpy(), rtol=1e-6, atol=1e-9)
    model_input = torch.from_numpy(ours.T.copy()).float()[None, None]
    assert (model_input - ref["mfcc_model_input"]).abs().max() < 1e-3
    assert np.array_equal(samples, ref["audio_int16"].numpy())  # input not modified


def test_sync_confidence_matches_published_evaluation(net, evaluated):
    ref, meta = evaluated
    frames, samples = eval_frames(), ref["audio_int16"].numpy()
    assert num_windows(len(frames), len(samples)) == meta["num_windows"] == 70
    np.testing.assert_allclose(mfcc(samples).T, ref["mfcc"].numpy(), rtol=1e-6, atol=1e-9)
    result = sync_confidence(net, frames, samples)
    assert result.offset == meta["av_offset"] == -6
    assert abs(result.sync_d - meta["min_dist"]) < 1e-3
    assert abs(result.sync_c - meta["conf"]) < 1e-3
    assert np.abs(result.mean_dists - ref["mean_dists"].numpy()).max() < 1e-3
    assert np.abs(result.dists - ref["dists"].numpy()).max() < 1e-3
    assert np.abs(result.framewise_conf - ref["framewise_conf"].numpy()).max() < 1e-3
    assert np.abs(result.framewise_conf_smoothed - ref["framewise_conf_medfilt"].numpy()).max() < 1e-3
    assert result.num_windows == 70 and result.window_times[-1] == pytest.approx(69 / 25)


def test_offset_search_from_stored_embeddings(evaluated):
    ref, meta = evaluated
    result = sync_from_embeddings(ref["im_feat"], ref["cc_feat"])
    assert result.offset == meta["av_offset"]
    assert np.abs(result.dists - ref["dists"].numpy()).max() < 1e-3


@pytest.mark.parametrize("shift", [3, -5])
def test_offset_search_finds_known_shift(shift):
    """Lip window i is built to match audio window i - shift: the offset must be `shift`."""
    gen = torch.Generator().manual_seed(5)
    windows, dim = 60, 64
    aud = torch.randn(windows, dim, generator=gen) * 3
    lip = torch.randn(windows, dim, generator=gen) * 3
    for i in range(windows):
        if 0 <= i - shift < windows:
            lip[i] = aud[i - shift] + 0.1 * torch.randn(dim, generator=gen)
    result = sync_from_embeddings(lip, aud)
    k = 15 - shift
    assert result.offset == shift
    assert result.sync_d == pytest.approx(float(result.dists[:, k].mean()), abs=1e-5)
    assert result.sync_d == pytest.approx(float(result.mean_dists.min()))
    assert result.sync_c > 1.0  # a clear match: far below the median of the other shifts
    unrelated = sync_from_embeddings(torch.randn(windows, dim, generator=gen) * 3, aud)
    assert unrelated.sync_c < result.sync_c / 3


def test_tracks_combine_as_published():
    def fake(offset, conf):
        return SyncResult(offset, 10.0, conf, np.zeros(31), np.zeros((1, 31)), np.zeros(1), np.zeros(1))

    combined = combine_tracks([fake(-3, 2.0), fake(2, 4.0)])
    assert combined.offset == 0 and combined.sync_c == 3.0 and combined.num_tracks == 2  # int(-0.5) == 0
    assert combine_tracks([fake(-3, 1.0), fake(-4, 1.0)]).offset == -3


def test_too_short_clip_is_rejected(net):
    with pytest.raises(InputError, match="too short"):
        sync_confidence(net, np.zeros((5, 224, 224, 3), np.uint8), np.zeros(16000, np.int16))
    with pytest.raises(InputError, match="int16"):
        sync_confidence(net, np.zeros((10, 224, 224, 3), np.uint8), np.zeros(16000, np.float32))


@pytest.mark.gpu
def test_sync_confidence_on_cuda_matches(evaluated):
    ref, meta = evaluated
    net = load_syncnet_v2(WEIGHTS, device="cuda")
    result = sync_confidence(net, eval_frames(), ref["audio_int16"].numpy(), device="cuda")
    assert result.offset == meta["av_offset"]
    assert abs(result.sync_d - meta["min_dist"]) < 1e-3 and abs(result.sync_c - meta["conf"]) < 1e-3
    assert np.abs(result.framewise_conf_smoothed - ref["framewise_conf_medfilt"].numpy()).max() < 1e-3
