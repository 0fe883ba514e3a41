"""Evaluation metrics: FID Inception layout and loading, the Fréchet distance, FVD's I3D call conventions and
clips, SSIM/PSNR by region on real frames, StableSyncNet accuracy, input pairing and checks, hashes, the report."""

from __future__ import annotations

import hashlib
import json
import os

import av
import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch
import yaml
from conftest import GOLDEN, MEDIA, golden_config, psnr

from latentsync.cli import eval_cmd, main
from latentsync.data import SyncNetDataset
from latentsync.errors import CheckpointError, InputError
from latentsync.evaluation import api, fvd, sync_metric
from latentsync.evaluation.fid import inception_features
from latentsync.evaluation.frames import RegionTally, mouth_regions, ssim_map
from latentsync.evaluation.frechet import FeatureStats, frechet_distance
from latentsync.evaluation.hashing import file_sha256
from latentsync.evaluation.inception import FIDInception, InceptionSizes, load_inception
from latentsync.evaluation.inputs import VideoPair, check_pairs, collect_pairs
from latentsync.evaluation.report import render_html, write_reports
from latentsync.evaluation.syncnet_acc import syncnet_accuracy
from latentsync.face import FaceAligner, create_detector, track_faces
from latentsync.media import VideoWriter, read_frames
from latentsync.models import load_syncnet
from latentsync.testing.metric_models import (
    RandomI3D,
    write_random_i3d,
    write_random_inception,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """12 real 640 x 360 frames of a talking face."""
    return np.stack([f for _, f in read_frames(MEDIA / "demo1_360p.mp4", indices=range(0, 48, 4))])


@pytest.fixture(scope="module")
def track(frames):
    return track_faces(iter(frames), create_detector("mediapipe"))


# --- FID Inception ---------------------------------------------------------------------------------------------


def test_inception_has_the_published_key_layout():
    state = {k: v for k, v in FIDInception().state_dict().items() if not k.endswith("num_batches_tracked")}
    # 94 conv + BatchNorm units (5 tensors each) and the 1008-class head, as torchvision's Inception3 without
    # the auxiliary classifier.
    assert len(state) == 94 * 5 + 2
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_6e.branch7x7dbl_5.conv.weight"] == (192, 192, 1, 7)
    assert shapes["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["Mixed_7c.branch_pool.bn.running_var"] == (192,)
    assert shapes["fc.weight"] == (1008, 2048)
    # torchvision documents 27,161,264 parameters for Inception3 with 1000 classes and the auxiliary head
    # (3,326,696 parameters); the FID head has 8 more classes (8 x 2049).
    assert sum(p.numel() for p in FIDInception().parameters()) == 27_161_264 - 3_326_696 + 8 * 2049


@pytest.mark.parametrize("counters", [False, True])
def test_inception_file_round_trip(tmp_path, frames, counters):
    path = write_random_inception(tmp_path / "pt_inception.pth", divisor=8, counters=counters)
    model = load_inception(path)
    direct = FIDInception(InceptionSizes(8))
    direct.load_state_dict(torch.load(path, weights_only=True), strict=False)
    crops = frames[:3, 40:264, 60:284]
    feats = inception_features(model, crops)
    assert feats.shape == (3, 256)
    with torch.no_grad():
        expected = direct.eval()(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255).double().numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="Inception"):
        load_inception(tmp_path / "other.pth")


def test_inception_pools_average_only_real_pixels():
    block = FIDInception(InceptionSizes(32)).Mixed_5b.eval()
    with torch.no_grad():  # the pool branch of a constant input is constant, borders included
        block.branch_pool.bn.running_mean.zero_()
        x = torch.ones(1, block.branch1x1.conv.in_channels, 9, 9)
        pooled = block.branch_pool(torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        out = block(x)[:, -pooled.shape[1]:]
    torch.testing.assert_close(out, pooled)
    assert torch.allclose(out[..., 0, 0], out[..., 4, 4])


# --- Fréchet distance, FID, FVD --------------------------------------------------------------------------------


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal([0, 1, 2], [1.0, 2.0, 0.5], size=(4000, 3))
    b = rng.normal([1, 1, 0], [2.0, 1.0, 0.5], size=(4000, 3))
    sa, sb = FeatureStats.of(a, "x"), FeatureStats.of(b, "x")
    da, db = np.diag(np.diag(sa.cov)), np.diag(np.diag(sb.cov))
    diag_a, diag_b = FeatureStats(sa.mean, da, 2), FeatureStats(sb.mean, db, 2)
    closed = np.sum((sa.mean - sb.mean) ** 2) + np.sum((np.sqrt(np.diag(da)) - np.sqrt(np.diag(db))) ** 2)
    assert frechet_distance(diag_a, diag_b) == pytest.approx(closed, rel=1e-9)
    assert frechet_distance(sa, sa) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(sa, sb) == pytest.approx(frechet_distance(sb, sa), rel=1e-6)
    # The published formula with scipy's sqrtm, on correlated features.
    mix = rng.normal(size=(6, 6))
    c, d = FeatureStats.of(rng.normal(size=(500, 6)) @ mix, "x"), FeatureStats.of(rng.normal(size=(500, 6)) @ mix.T, "x")
    root = np.real(scipy.linalg.sqrtm(c.cov @ d.cov))
    published = np.sum((c.mean - d.mean) ** 2) + np.trace(c.cov + d.cov - 2 * root)
    assert frechet_distance(c, d) == pytest.approx(published, rel=1e-9)
    few = FeatureStats.of(rng.normal(size=(3, 50)), "x")  # singular covariances: finite and >= 0
    assert 0 < frechet_distance(few, FeatureStats.of(rng.normal(size=(3, 50)), "x")) < np.inf
    with pytest.raises(InputError, match="at least 2"):
        FeatureStats.of(a[:1], "FID")


def test_fid_of_real_face_crops(tmp_path, frames, track):
    model = load_inception(write_random_inception(tmp_path / "inc.pth", divisor=8))
    crops = api.face_box_crops(frames, track.boxes)
    assert crops.shape == (12, 224, 224, 3)
    box = track.boxes[0].astype(int)
    assert abs(crops[0].mean() - frames[0, box[1]:box[3], box[0]:box[2]].mean()) < 2  # the face, not the frame
    feats = inception_features(model, crops)
    noisy = np.clip(crops + np.random.default_rng(0).normal(0, 25, crops.shape), 0, 255).astype(np.uint8)
    same = frechet_distance(FeatureStats.of(feats, "FID"), FeatureStats.of(feats, "FID"))
    other = frechet_distance(FeatureStats.of(feats, "FID"), FeatureStats.of(inception_features(model, noisy), "FID"))
    assert abs(same) < 1e-6 * other and other > 0


def test_fvd_clip_choice():
    present = np.ones(60, bool)
    assert fvd.clip_starts(present, "published") == [20]
    assert fvd.clip_starts(present, "all") == [0, 16, 32]
    present[25] = False
    assert fvd.clip_starts(present, "published") == [0]  # frames 20-35 lack a face: the first full clip
    assert fvd.clip_starts(present, "all") == [0, 26, 42]
    assert fvd.clip_starts(np.ones(15, bool), "published") == []
    with pytest.raises(InputError, match="clip mode"):
        fvd.clip_starts(present, "every")


def test_i3d_is_called_with_the_published_conventions(tmp_path):
    path = write_random_i3d(tmp_path / "i3d_torchscript.pt")
    model = fvd.load_i3d(path)
    assert isinstance(model, torch.jit.ScriptModule)
    clips = np.random.default_rng(1).integers(0, 256, (2, 16, 224, 224, 3), dtype=np.uint8)
    x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float()
    reference = RandomI3D()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        published = reference(x / 255, rescale=False, resize=False, return_features=True).double().numpy()
        stylegan = reference(x / 127.5 - 1, return_features=True).double().numpy()
    np.testing.assert_allclose(fvd.i3d_features(model, clips), published, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fvd.i3d_features(model, clips, "stylegan-v"), stylegan, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="224"):
        fvd.i3d_features(model, clips[:, :, :112])
    write_random_inception(tmp_path / "not_script.pt", divisor=32)
    with pytest.raises(CheckpointError, match="TorchScript"):
        fvd.load_i3d(tmp_path / "not_script.pt")


# --- SSIM / PSNR by region -------------------------------------------------------------------------------------


def _ssim_scipy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Independent SSIM map in float64 with scipy's Gaussian filter (radius 5, sigma 1.5), valid part only."""
    out = []
    for c in range(3):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
        f = lambda z: scipy.ndimage.gaussian_filter(z, 1.5, truncate=5 / 1.5)[5:-5, 5:-5]
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        out.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return np.mean(out, axis=0)


def test_ssim_matches_an_independent_implementation(frames):
    a, b = frames[0, :160, :200], frames[5, :160, :200]
    np.testing.assert_allclose(ssim_map(a, b), _ssim_scipy(a, b), atol=2e-4)
    np.testing.assert_allclose(ssim_map(frames[1], frames[1]), 1.0, atol=1e-5)


def test_mouth_region_sits_on_the_lower_face(frames, track):
    aligner = FaceAligner(256)
    mats = aligner.matrices(track.points)
    mouth = mouth_regions(aligner, mats, *frames.shape[1:3])
    for region, box, points in zip(mouth, track.boxes, track.points):
        ys, xs = np.nonzero(region)
        assert len(ys) > 0.1 * (box[2] - box[0]) * (box[3] - box[1])  # a real part of the face
        assert ys.min() > points[:, 1].min()  # below the eyebrows
        assert box[0] - 20 < xs.mean() < box[2] + 20 and ys.mean() > (box[1] + box[3]) / 2 - 10


def test_aligned_faces_follow_the_pipeline_alignment(frames, track):
    aligner = FaceAligner(256)
    mats = aligner.matrices(track.points[:3])
    ours = api.aligned_faces(frames[:3], mats, aligner)
    pipeline = aligner.warp(frames[:3], mats)  # crop, then Lanczos-4 to R x R
    assert ours.shape == pipeline.shape == (3, 256, 256, 3)
    assert np.abs(ours.astype(int) - pipeline.astype(int)).mean() < 3


def test_region_tally_separates_mouth_and_rest(frames, track):
    aligner = FaceAligner(256)
    mouth = mouth_regions(aligner, aligner.matrices(track.points[:4]), *frames.shape[1:3])
    source = frames[:4]
    edited = source.copy()
    noise = np.random.default_rng(0).integers(-40, 41, source.shape)
    edited[mouth] = np.clip(source[mouth] + noise[mouth], 0, 255).astype(np.uint8)  # only the mouth changes
    tally = RegionTally()
    tally.add(edited, source, mouth)
    s = tally.summary()
    assert s["psnr_rest"] == 100.0 and s["ssim_rest"] == pytest.approx(1.0, abs=0.02)
    assert s["psnr_mouth"] == pytest.approx(psnr(edited[mouth], source[mouth]), abs=1e-6)
    assert s["psnr_frame"] == pytest.approx(psnr(edited, source), abs=1e-6)
    assert s["ssim_mouth"] < 0.9 and s["ssim_mouth"] < s["ssim_frame"] < s["ssim_rest"]


# --- StableSyncNet accuracy ------------------------------------------------------------------------------------


def _aligned_clip(path, frames: np.ndarray, seed: int):
    rng = np.random.default_rng(seed)
    audio = (0.3 * rng.standard_normal(len(frames) * 640) * np.repeat(rng.random(len(frames)) > 0.5, 640)).astype(np.float32)
    with VideoWriter(path, 256, 256, fps=25, audio=audio) as writer:
        writer.write(frames)
    return path


def test_syncnet_accuracy_counts_as_published(tmp_path, frames):
    faces = np.stack([np.ascontiguousarray(f[60:316, 52:308]) for f in frames])
    data = tmp_path / "clips"
    data.mkdir()
    clips = [_aligned_clip(data / f"c{i}.mp4", np.concatenate([faces, faces[::-1], faces])[:36], i) for i in range(2)]
    config = {"model": golden_config("syncnet_config"), "data": {"resolution": 256, "num_frames": 16, "lower_half": True}}
    (tmp_path / "syncnet.yaml").write_text(yaml.safe_dump(config))
    weights = GOLDEN / "syncnet_weights.safetensors"
    assert main(["eval-syncnet", "--config", str(tmp_path / "syncnet.yaml"), "--checkpoint", str(weights),
                 "--data-dir", str(data), "--num-samples", "3", "--batch-size", "3", "--seed", "3",
                 "--device", "cpu", "--output", str(tmp_path / "acc.json"), "--quiet"]) == 0
    result = json.loads((tmp_path / "acc.json").read_text())

    model = load_syncnet(config, weights)
    dataset = SyncNetDataset(clips, resolution=256, num_frames=16, lower_half=True, seed=3)
    correct, per_label = 0, {0.0: [0, 0], 1.0: [0, 0]}
    with torch.no_grad():
        for i in range(3):
            item = dataset[i]
            v, a = model(item["frames"][None], item["mel"][None])
            ok = int((float(torch.nn.functional.cosine_similarity(v, a)) > 0.5) == bool(item["label"]))
            correct += ok
            per_label[float(item["label"])][0] += ok
            per_label[float(item["label"])][1] += 1
    assert (result["correct"], result["total"]) == (correct, 3) and result["accuracy"] == correct / 3
    assert result["in_sync_accuracy"] == per_label[1.0][0] / max(per_label[1.0][1], 1)
    assert result["off_sync_accuracy"] == per_label[0.0][0] / max(per_label[0.0][1], 1)
    with pytest.raises(InputError, match="no clips"):
        syncnet_accuracy(config, weights, [])


# --- inputs, hashes, report ------------------------------------------------------------------------------------


def test_pairing_by_name_list_and_csv(tmp_path):
    gen, src = tmp_path / "gen", tmp_path / "src"
    gen.mkdir(), src.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (gen / name).write_bytes(b"")
    (src / "a.mov").write_bytes(b"")
    (src / "b.mp4").write_bytes(b"")
    pairs = collect_pairs([gen], reference_dir=src)
    assert pairs == [VideoPair(gen / "a.mp4", src / "a.mov"), VideoPair(gen / "b.mp4", src / "b.mp4")]
    assert collect_pairs(gen / "a.mp4", src / "b.mp4") == [VideoPair(gen / "a.mp4", src / "b.mp4")]  # one and one
    listing = tmp_path / "list.txt"
    listing.write_text("# generated\ngen/b.mp4\n")
    assert collect_pairs(listing) == [VideoPair(tmp_path / "gen" / "b.mp4")]
    table = tmp_path / "pairs.csv"
    table.write_text("generated,reference\ngen/a.mp4,src/b.mp4\n")
    assert collect_pairs(table) == [VideoPair(gen / "a.mp4", src / "b.mp4")]
    (src / "b.mp4").unlink()
    with pytest.raises(InputError, match="no reference video with the same name for: b.mp4"):
        collect_pairs([gen], reference_dir=src)
    with pytest.raises(InputError, match="not found"):
        collect_pairs(tmp_path / "nope.mp4")
    table.write_text("video\nx.mp4\n")
    with pytest.raises(InputError, match="generated"):
        collect_pairs(table)


def test_checks_before_any_model(tmp_path):
    video = MEDIA / "demo1_360p.mp4"
    silent = tmp_path / "silent.mp4"
    with av.open(str(silent), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")))
        out.mux(stream.encode())
    with pytest.raises(InputError, match="ssim, lpips compare with the source video"):
        check_pairs([VideoPair(video)], ["ssim", "lpips"], needs_audio=False)
    with pytest.raises(InputError, match="no audio track"):
        check_pairs([VideoPair(silent)], [], needs_audio=True)
    with pytest.raises(InputError, match="is 360x640 but its reference demo1_6s.mp4 is 288x512"):
        check_pairs([VideoPair(video, MEDIA / "demo1_6s.mp4")], ["ssim"], needs_audio=False)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(InputError, match="notes.mp4"):
        check_pairs([VideoPair(text)], [], needs_audio=False)
    with pytest.raises(InputError, match="unknown metrics: psnr"):
        api.EvalSettings(metrics=("sync", "psnr"))


def test_weight_hashes_are_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTSYNC_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "w.pth"
    path.write_bytes(b"weights" * 1000)
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    cache = json.loads((tmp_path / "cache" / "file_hashes.json").read_text())
    key = next(iter(cache))
    cache[key] = "remembered"
    (tmp_path / "cache" / "file_hashes.json").write_text(json.dumps(cache))
    assert file_sha256(path) == "remembered"  # not re-hashed while size and time are unchanged
    path.write_bytes(b"other" * 1000)
    os.utime(path, ns=(1, 1))
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(json.loads((tmp_path / "cache" / "file_hashes.json").read_text())) == 1


def test_report_files(tmp_path):
    video = {"generated": "/x/talk.mp4", "reference": "/y/talk.mp4", "frames": 50, "seconds": 2.0,
             "metrics": {"sync_c": 3.5, "sync_d": 7.25, "offset": 1, "ssim_mouth": float("nan"), "lpips": 0.125},
             "series": {"sync_time": [0.1, 0.14, 0.18], "sync_confidence": [1.0, -0.5, 2.0]}, "notes": ["a <note>"]}
    report = {"videos": [video], "aggregate": {"videos": 1, "sync_c": 3.5, "fid": None}, "notes": [],
              "settings": {"metrics": ["sync"]}, "weights": {"syncnet_v2": {"path": "/w", "sha256": "ab" * 32}}}
    paths = write_reports(report, tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert saved["videos"][0]["metrics"]["ssim_mouth"] is None and saved["videos"][0]["metrics"]["sync_c"] == 3.5
    page = paths["html"].read_text()
    assert page == render_html(report)
    assert "data:image/png;base64," in page and "a &lt;note&gt;" in page and "3.500" in page
    assert "http" not in page and "src='/" not in page  # self-contained
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]


def test_cli_choices_match_the_modules():
    assert eval_cmd.METRICS == api.METRICS and eval_cmd.SYNC_FACES == sync_metric.SYNC_FACES
    assert eval_cmd.FVD_RANGES == fvd.RANGES and eval_cmd.FVD_CLIP_MODES == fvd.CLIP_MODES
