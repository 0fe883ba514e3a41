"""`latentsync eval` end to end: a lip-synced output of the tiny pipeline scored against its source video with
random weights in the published formats; the report equals the Python API's; bad requests fail before any
model is loaded."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import AUDIO, DATA, MEDIA

from latentsync.audio import SAMPLE_RATE, load_audio, save_wav
from latentsync.cli import main
from latentsync.evaluation import api
from latentsync.media import VideoWriter, read_frames
from latentsync.pipeline import LipSyncPipeline
from latentsync.testing import write_random_models
from latentsync.testing.metric_models import (
    TINY_VGG_STAGES,
    write_random_i3d,
    write_random_inception,
    write_random_lpips,
)

EVAL = DATA / "golden" / "eval"
SOURCE = MEDIA / "demo1_360p.mp4"  # 2 s, 50 frames of a talking face
pytestmark = pytest.mark.usefixtures("one_thread")
OPTIONS = ["--sync-faces", "tracker", "--face-backend", "mediapipe", "--fvd-clips", "all", "--device", "cpu"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """The source video lip-synced to 1.28 s (32 frames) of another speech by the tiny random pipeline (2 steps)."""
    root = tmp_path_factory.mktemp("generated")
    tiny = write_random_models(root / "models", "tiny")
    pipe = LipSyncPipeline.from_pretrained(
        "1.5", unet_config=tiny["unet_config"], unet_checkpoint=tiny["unet"], vae=tiny["vae"],
        whisper=tiny["whisper"], face_backend="mediapipe", offline=True,
    )
    speech = save_wav(root / "speech.wav", load_audio(AUDIO / "demo2_speech.flac")[: int(1.28 * SAMPLE_RATE)])
    return pipe(SOURCE, speech, root / "demo1_360p.mp4", num_inference_steps=2, seed=0, progress=False).path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """A checkpoints/ folder with every evaluation weight file, random, in the published formats."""
    root = tmp_path_factory.mktemp("checkpoints")
    aux = root / "auxiliary"
    aux.mkdir()
    shutil.copy(EVAL / "syncnet_v2_random.model", aux / "syncnet_v2.model")
    shutil.copy(EVAL / "sfd_face_random.pth", aux / "sfd_face.pth")
    write_random_i3d(aux / "i3d_torchscript.pt")
    write_random_inception(aux / "pt_inception-2015-12-05-6726825d.pth", divisor=16)
    write_random_lpips(aux / "vgg16-397923af.pth", aux / "lpips_vgg_v0.1.pth", TINY_VGG_STAGES)
    return root


def test_cli_report_matches_the_api(generated, checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LATENTSYNC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report"
    code = main(["eval", str(generated), "--reference", str(SOURCE), "--output-dir", str(out),
                 "--checkpoint-dir", str(checkpoints), "--offline", "--quiet", *OPTIONS])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((out / "report.json").read_text())
    report = api.evaluate(generated, SOURCE, checkpoint_dir=checkpoints, offline=True, sync_faces="tracker",
                          face_backend="mediapipe", fvd_clips="all", device="cpu")
    assert saved["videos"] == report["videos"] and saved["aggregate"] == report["aggregate"]
    assert saved["weights"] == report["weights"] and saved["settings"] == report["settings"]

    video = saved["videos"][0]
    m = video["metrics"]
    assert video["frames"] == 32 and video["seconds"] == 1.28
    # The pipeline regenerates the mouth and leaves the rest of the frame almost untouched.
    assert m["psnr_rest"] > 30 and m["psnr_mouth"] < m["psnr_rest"] - 5
    assert m["ssim_mouth"] < m["ssim_rest"] and 0.8 < m["ssim_rest"] <= 1
    assert m["lpips"] > 0 and m["lpips_frames"] == 32 and m["fid_frames"] == 32 and m["fvd_clips"] == 2
    assert m["sync_tracks"] == 1 and m["sync_d"] > 0 and -15 <= m["offset"] <= 15
    assert len(video["series"]["sync_confidence"]) == len(video["series"]["sync_time"]) == 32 - 5
    agg = saved["aggregate"]
    assert agg["fid"] > 0 and agg["fid_samples"] == 32 and agg["fvd"] > 0 and agg["fvd_samples"] == 2
    assert agg["sync_c"] == m["sync_c"] and agg["psnr_mouth"] == m["psnr_mouth"]
    assert any("FVD from 2 clips" in n for n in saved["notes"])  # few samples are flagged
    assert set(saved["weights"]) == {"syncnet_v2", "i3d", "inception", "vgg16", "lpips"}
    i3d = checkpoints / "auxiliary" / "i3d_torchscript.pt"
    assert saved["weights"]["i3d"] == {"path": str(i3d), "sha256": hashlib.sha256(i3d.read_bytes()).hexdigest()}
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "demo1_360p.mp4" in page
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json"]


def test_sync_with_the_published_face_tracker_explains_a_missing_track(generated, checkpoints, tmp_path):
    # S3FD tracks need more than 50 frames; this clip has 8: the report says so instead of failing.
    frames = np.stack([f for _, f in read_frames(generated, indices=range(8))])
    short = tmp_path / "short.mp4"
    with VideoWriter(short, frames.shape[2], frames.shape[1], fps=25, audio=load_audio(generated)[: 8 * 640]) as w:
        w.write(frames)
    report = api.evaluate(short, metrics=["sync"], checkpoint_dir=checkpoints, offline=True, device="cpu")
    video = report["videos"][0]
    assert video["metrics"]["sync_c"] is None and video["metrics"]["sync_tracks"] == 0
    assert "more than 50 frames" in video["notes"][0] and "--sync-faces tracker" in video["notes"][0]
    assert set(report["weights"]) == {"syncnet_v2", "s3fd"} and report["aggregate"]["sync_c"] is None


@pytest.fixture
def no_models(monkeypatch):
    """Make every model loader fail the test: the errors below must come before any of them."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded")

    for name in ("load_inception", "load_lpips_files", "load_sync_models", "create_detector"):
        monkeypatch.setattr(api, name, forbidden)
    monkeypatch.setattr(api.fvd_mod, "load_i3d", forbidden)


def test_missing_reference_or_weights_fail_clearly_before_any_model(generated, checkpoints, tmp_path, capsys, no_models):
    out, empty = tmp_path / "report", tmp_path / "empty"
    empty.mkdir()
    code = main(["eval", str(generated), "--output-dir", str(out), "--metrics", "sync,ssim,lpips",
                 "--checkpoint-dir", str(checkpoints), "--offline", "--quiet", *OPTIONS])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("latentsync: error: ssim, lpips compare with the source video")
    assert "--reference" in err and "Traceback" not in err

    code = main(["eval", str(generated), "--reference", str(SOURCE), "--output-dir", str(out), "--metrics",
                 "sync,fid,lpips", "--checkpoint-dir", str(empty), "--offline", "--quiet", *OPTIONS])
    err = capsys.readouterr().err
    assert code == 2 and "missing LatentSync 1.6 weights" in err
    for name in ("syncnet_v2.model", "pt_inception-2015-12-05-6726825d.pth", "vgg16-397923af.pth", "lpips_vgg_v0.1.pth"):
        assert name in err
    assert f"latentsync download --version 1.6 --components syncnet_v2,inception,vgg16,lpips --checkpoint-dir {empty}" in err

    code = main(["eval", str(tmp_path / "missing.mp4"), "--output-dir", str(out), "--metrics", "sync", "--quiet"])
    assert code == 2 and "generated video not found" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())  # nothing written
