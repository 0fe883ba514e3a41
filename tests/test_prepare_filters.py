"""The model steps of `latentsync prepare` with the real loaders and random weights in the published formats
(`checkpoints/auxiliary/syncnet_v2.model`, `sfd_face.pth`, `koniq_pretrained.pkl`): scores recorded, the kept
clip's audio shifted by the measured offset, keep/reject decisions set by thresholds (random weights give
meaningless scores), and new thresholds or weights redo only what they affect."""

from __future__ import annotations

import json
import shutil
import sqlite3

import cv2
import numpy as np
import pytest
import torch

from conftest import DATA, MEDIA
from latentsync.audio import load_audio
from latentsync.data.prepare import PrepareSettings, prepare_dataset
from latentsync.evaluation import load_hyperiqa, load_s3fd, load_syncnet_v2, score_video
from latentsync.evaluation.hyperiqa import read_iqa_frames
from latentsync.media import VideoWriter, read_frames

EVAL = DATA / "golden" / "eval"
OPEN = dict(min_sync_confidence=-1e9, max_sync_offset=15, min_quality=-1e9)  # keep whatever random weights say
BASE = dict(resolution=256, min_seconds=2.0, max_seconds=3.0, face_backend="mediapipe", skip=("shots",))
CLIP = "clips/talk/000000-000063.mp4"
FRAMES = 64  # SyncNet's face tracks need more than 50 frames


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("filters")
    aux = root / "checkpoints" / "auxiliary"
    aux.mkdir(parents=True)
    shutil.copy(EVAL / "syncnet_v2_random.model", aux / "syncnet_v2.model")
    shutil.copy(EVAL / "sfd_face_random.pth", aux / "sfd_face.pth")
    shutil.copy(EVAL / "koniq_random.pkl", aux / "koniq_pretrained.pkl")
    (root / "raw").mkdir()
    frames = [cv2.resize(f, (216, 384), interpolation=cv2.INTER_AREA) for _, f in read_frames(MEDIA / "demo1_6s.mp4", indices=range(FRAMES))]
    with VideoWriter(root / "raw" / "talk.mp4", 216, 384, audio=load_audio(MEDIA / "demo1_6s.mp4")[: FRAMES * 640]) as writer:
        writer.write(np.stack(frames))
    out = root / "out"
    report = run(root, **OPEN)
    return root, out, report


def run(root, **thresholds):
    settings = PrepareSettings(**BASE, **thresholds)
    return prepare_dataset(root / "raw", root / "out", settings, workers=1, checkpoint_dir=root / "checkpoints",
                           offline=True, progress=False)


def aligned(out):
    """The aligned work copy of the clip, as the manifest names it."""
    with sqlite3.connect(out / "manifest.sqlite") as db:
        (result,) = db.execute("SELECT result FROM steps WHERE step = 'align'").fetchone()
    return out / json.loads(result)["aligned"]


def clip_row(out) -> dict:
    with sqlite3.connect(out / "manifest.sqlite") as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM clips").fetchone())


def test_scores_are_those_of_the_evaluation_models(setup, one_thread):
    root, out, report = setup
    row = clip_row(out)
    assert row["state"] == "kept" and report.clips == [out / CLIP]
    aux = root / "checkpoints" / "auxiliary"
    scored = score_video(aligned(out), load_syncnet_v2(aux / "syncnet_v2.model"), load_s3fd(aux / "sfd_face.pth"))
    assert scored.found_face
    assert row["sync_offset"] == scored.combined.offset
    assert row["sync_confidence"] == pytest.approx(scored.combined.sync_c, abs=1e-5)
    quality = load_hyperiqa(aux / "koniq_pretrained.pkl").score(read_iqa_frames(aligned(out)))
    assert row["quality"] == pytest.approx(quality, abs=1e-4)
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kept_clip_audio_is_shifted_by_the_measured_offset(setup):
    _, out, _ = setup
    offset = clip_row(out)["sync_offset"]
    published, original = load_audio(out / CLIP), load_audio(aligned(out))
    window = slice(11000, 23000)
    lags = range(-16 * 640, 16 * 640 + 1)
    best = max(lags, key=lambda s: float(np.dot(published[window], original[window.start - s : window.stop - s])))
    assert best == offset * 640  # offset x 40 ms, to the sample


def test_thresholds_decide_without_running_anything_again(setup):
    root, out, first = setup
    scores = {k: clip_row(out)[k] for k in ("sync_confidence", "sync_offset", "quality")}
    strict = run(root, **{**OPEN, "min_quality": 1e9})
    assert strict.computed == {} and strict.clips == []
    row = clip_row(out)
    assert (row["state"], row["step"], row["reason"]) == ("rejected", "quality", "low quality")
    assert not (out / CLIP).exists() and (out / "fileslist.txt").read_text() == ""
    assert strict.steps["quality"]["rejected"] == {"low quality": 1}

    unsynced = run(root, **{**OPEN, "min_sync_confidence": 1e9})
    assert unsynced.computed == {}
    assert (clip_row(out)["step"], clip_row(out)["reason"]) == ("sync", "low sync confidence")
    assert {k: clip_row(out)[k] for k in scores} == {**scores, "quality": None}  # the clip stops before quality

    again = run(root, **OPEN)
    assert again.computed == {"publish": 1} and (out / CLIP).exists()  # only the deleted clip is written again


def test_new_weights_redo_only_their_step(setup):
    root, out, _ = setup
    path = root / "checkpoints" / "auxiliary" / "koniq_pretrained.pkl"
    state = torch.load(path, map_location="cpu", weights_only=True)
    name = next(k for k in state if k.startswith("fc1w_conv") and k.endswith("weight"))
    state[name] = state[name].contiguous() * 1.5
    torch.save(state, path)
    before = clip_row(out)["quality"]
    report = run(root, **OPEN)
    assert report.computed == {"quality": 1}
    assert clip_row(out)["quality"] != before


@pytest.mark.gpu
def test_model_steps_on_the_gpu_give_the_cpu_scores(setup, tmp_path):
    """With CUDA, the local engine runs SyncNet, S3FD and HyperIQA in a process of their own on the GPU."""
    root, out, _ = setup
    cpu = clip_row(out)
    gpu_out = tmp_path / "out"
    report = prepare_dataset(root / "raw", gpu_out, PrepareSettings(**BASE, **OPEN), workers=1,
                             checkpoint_dir=root / "checkpoints", offline=True, progress=False)
    gpu = clip_row(gpu_out)
    assert report.computed["sync"] == 1 and gpu["state"] == "kept"
    assert gpu["sync_offset"] == cpu["sync_offset"]
    assert gpu["sync_confidence"] == pytest.approx(cpu["sync_confidence"], abs=1e-2)
    assert gpu["quality"] == pytest.approx(cpu["quality"], abs=1e-2)
