"""The weights module: offline resolution, exact missing-file reports, Hub cache and download layout."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from latentsync import weights
from latentsync.errors import MissingWeightsError


def test_offline_missing_names_every_file_and_the_fix(tmp_path):
    (tmp_path / "whisper").mkdir()
    (tmp_path / "whisper" / "tiny.pt").write_bytes(b"x")
    with pytest.raises(MissingWeightsError) as err:
        weights.resolve(["unet", "whisper", "vae"], "1.5", tmp_path, offline=True)
    text = str(err.value)
    assert "latentsync_unet.pt" in text and "hf://ByteDance/LatentSync-1.5/latentsync_unet.pt" in text
    assert "sd-vae-ft-mse/config.json" in text and "sd-vae-ft-mse/diffusion_pytorch_model.safetensors" in text
    assert "whisper/tiny.pt" not in text  # present files are not reported
    assert f"latentsync download --version 1.5 --components unet,whisper,vae --checkpoint-dir {tmp_path}" in text


def test_local_folder_in_published_layout_resolves_offline(tmp_path):
    for f in ["latentsync_unet.pt", "whisper/tiny.pt", "sd-vae-ft-mse/config.json",
              "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
              "auxiliary/models/buffalo_l/det_10g.onnx", "auxiliary/models/buffalo_l/2d106det.onnx"]:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(b"x")
    paths = weights.resolve(weights.INFERENCE, "1.6", tmp_path, offline=True)
    assert paths["unet"] == tmp_path / "latentsync_unet.pt"
    assert paths["vae"] == tmp_path / "sd-vae-ft-mse"
    assert paths["face"] == tmp_path / "auxiliary/models/buffalo_l"
    assert weights.has_components(["face"], "1.6", tmp_path)
    assert not weights.has_components(["syncnet"], "1.6", tmp_path)


def test_hub_cache_is_used_offline(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    snap = cache / "models--ByteDance--LatentSync-1.6" / "snapshots" / "abc123"
    (snap / "whisper").mkdir(parents=True)
    (snap / "whisper" / "tiny.pt").write_bytes(b"x")
    (cache / "models--ByteDance--LatentSync-1.6" / "refs").mkdir()
    (cache / "models--ByteDance--LatentSync-1.6" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    import huggingface_hub.file_download as fd

    monkeypatch.setattr(fd, "HF_HUB_CACHE", str(cache), raising=False)
    paths = weights.resolve(["whisper"], "1.6", None, offline=True)
    assert paths["whisper"] == snap / "whisper" / "tiny.pt"


def test_download_places_hub_files_and_archive_members_in_layout(tmp_path, monkeypatch):
    calls = []

    def fake_hf_hub_download(repo, filename, local_dir=None):
        calls.append((repo, filename))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f"{repo}/{filename}".encode())
        return str(target)

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("buffalo_l/det_10g.onnx", b"det")
        z.writestr("buffalo_l/2d106det.onnx", b"lmk")
        z.writestr("buffalo_l/w600k_r50.onnx", b"unused")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_hf_hub_download)
    served = {weights.BUFFALO_L_URL: archive.getvalue(), weights.LPIPS_VGG_URL: b"lpips"}
    monkeypatch.setattr("urllib.request.urlopen", lambda url: io.BytesIO(served[url]))
    target = tmp_path / "ckpt"
    paths = weights.resolve(["vae", "face", "unet", "lpips"], "1.6", target)
    assert ("stabilityai/sd-vae-ft-mse", "config.json") in calls
    assert ("ByteDance/LatentSync-1.6", "latentsync_unet.pt") in calls
    assert (target / "sd-vae-ft-mse" / "config.json").read_bytes() == b"stabilityai/sd-vae-ft-mse/config.json"
    assert (target / "auxiliary/models/buffalo_l/det_10g.onnx").read_bytes() == b"det"
    assert (paths["face"] / "2d106det.onnx").read_bytes() == b"lmk"
    # Nothing but the layout is left behind (temporary folders are removed).
    leftovers = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert paths["lpips"].read_bytes() == b"lpips"
    assert leftovers == [
        "auxiliary/lpips_vgg_v0.1.pth", "auxiliary/models/buffalo_l/2d106det.onnx", "auxiliary/models/buffalo_l/det_10g.onnx",
        "auxiliary/models/buffalo_l/w600k_r50.onnx", "latentsync_unet.pt",
        "sd-vae-ft-mse/config.json", "sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
    ]
    # A second call finds everything locally and downloads nothing.
    calls.clear()
    weights.resolve(["vae", "face", "unet", "lpips"], "1.6", target)
    assert calls == []


def test_unknown_version_and_component():
    with pytest.raises(MissingWeightsError, match="unknown LatentSync version"):
        weights.resolve(["unet"], "2.0")
    with pytest.raises(MissingWeightsError, match="unknown weight components: nope"):
        weights.resolve(["nope"], "1.6", offline=True)
