"""U-Net training (stages 1 and 2) on tiny models: losses, checkpoints, resume, DDP, validation, use of the audio.

Stage 1 trains on synthetic clips whose mouth follows the speech (`latentsync.testing.make_sync_clips`); the
other runs use one real clip, made here from demo1 (a fixed crop around the face, resized to 64 x 64, with its
own speech): 50 frames, enough for a 16-frame sample plus a non-overlapping reference window. Models: the golden tiny U-Net with
64-wide cross-attention (matching the golden random Whisper), an 8-channel VAE, and small SyncNet, LPIPS and
VideoMAE configurations of the real code with random weights, written in the published file formats.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from diffusers import AutoencoderKL

from conftest import AUDIO, GOLDEN, MEDIA
from latentsync.audio import load_audio
from latentsync.checkpoint import load_state_dict, save_safetensors
from latentsync.errors import CheckpointError, InputError, MissingWeightsError
from latentsync.media import VideoWriter, read_frames
from latentsync.models import load_scheduler, load_unet
from latentsync.models.lpips import LPIPS
from latentsync.models.syncnet import StableSyncNet
from latentsync.models.videomae import VideoMAE, VideoMAEConfig
from latentsync.testing import make_sync_clips
from latentsync.training.losses import frame_noise, predicted_x0, sync_loss
from latentsync.training.unet import (
    DEMO_VIDEO,
    Validator,
    WeightFiles,
    load_initial_weights,
    load_training_config,
    select_trainable,
    stage_loss_weights,
    train_unet,
)

R = 64
CONFIGS = Path(__file__).parent.parent / "latentsync" / "configs" / "unet"
LPIPS_STAGES = [[8, 8], [16, 16], [16, 16, 16], [32, 32, 32], [32, 32, 32]]
VIDEOMAE = dict(image_size=28, patch_size=14, tubelet_size=2, num_frames=16, embed_dim=64, depth=2, num_heads=4,
                num_classes=5)  # fmt: skip
# A StableSyncNet whose visual branch takes the lower half of 64 x 64 frames (48 x 32 x 64) down to 1 x 1.
SYNCNET_VISUAL = {"in_channels": 48, "block_out_channels": [32, 32, 32, 32, 64, 64],
                  "downsample_factors": [[1, 2], 2, 2, 2, 2, 2], "attn_blocks": [0, 0, 0, 0, 1, 0],
                  "dropout": 0.0}  # fmt: skip
LOSSES = ("recon_loss", "sync_loss", "lpips_loss", "trepa_loss")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict:
    """Training clip and tiny model files; returns the `weights:` section and paths."""
    root = tmp_path_factory.mktemp("unet_assets")
    torch.manual_seed(0)

    source = MEDIA / "demo1_360p.mp4"  # 360 x 640, 50 frames; the face lies around x 165-235, y 195-290
    crops = [f[190:290, 150:250] for _, f in read_frames(source)]
    frames = np.stack([cv2.resize(c, (R, R), interpolation=cv2.INTER_AREA) for c in crops])
    clip = root / "clips" / "demo1.mp4"
    clip.parent.mkdir()
    with VideoWriter(clip, R, R, audio=load_audio(source)) as writer:
        writer.write(frames)

    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), norm_num_groups=8, layers_per_block=1,
                        down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4)  # fmt: skip
    vae.save_pretrained(root / "vae")

    audio_encoder = json.loads((GOLDEN / "syncnet_config.json").read_text())["audio_encoder"]
    syncnet = StableSyncNet(audio_encoder, SYNCNET_VISUAL)
    save_safetensors(syncnet.state_dict(), root / "syncnet.safetensors")
    syncnet_config = {"model": {"audio_encoder": audio_encoder, "visual_encoder": SYNCNET_VISUAL},
                      "data": {"resolution": R, "lower_half": True},
                      "ckpt": {"inference_ckpt_path": str(root / "syncnet.safetensors")}}  # fmt: skip
    (root / "syncnet.yaml").write_text(yaml.safe_dump(syncnet_config))

    lpips = LPIPS(LPIPS_STAGES)
    torch.save(lpips.vgg.state_dict(), root / "vgg16.pth")  # torchvision key names
    heads = {f"lin{i}.model.1.weight": lin.weight.detach().abs() for i, lin in enumerate(lpips.lins)}  # non-negative
    torch.save(heads, root / "lpips.pth")
    torch.save({"model": VideoMAE(VideoMAEConfig(**VIDEOMAE)).state_dict()}, root / "videomae.pth")

    weights = {
        "offline": True, "whisper": str(GOLDEN / "whisper_random.pt"), "vae": str(root / "vae"),
        "vgg16": str(root / "vgg16.pth"), "lpips": str(root / "lpips.pth"), "lpips_stages": LPIPS_STAGES,
        "videomae": str(root / "videomae.pth"), "videomae_config": VIDEOMAE,
    }  # fmt: skip
    return {"root": root, "weights": weights, "syncnet_config": str(root / "syncnet.yaml")}


def _tiny_unet(motion: bool) -> dict:
    model = json.loads((GOLDEN / "unet_config.json").read_text())
    return dict(model, cross_attention_dim=64, use_motion_module=motion)


def _overrides(assets: dict, output: Path, steps: int, stage: int, **extra) -> dict:
    """Overrides that point a published stage config at the tiny models and the test clip."""
    values = {
        "model": _tiny_unet(motion=stage == 2),
        "weights": assets["weights"],
        "data.resolution": R, "data.train_fileslist": "", "data.train_data_dir": str(assets["root"] / "clips"),
        "data.train_output_dir": str(output), "data.num_workers": 0, "data.mask_image_path": "",
        "data.audio_embeds_cache_dir": str(assets["root"] / "cache"),
        "data.syncnet_config_path": assets["syncnet_config"],
        "ckpt.resume_ckpt_path": "", "ckpt.save_ckpt_steps": steps,
        "run.max_train_steps": steps, "run.log_steps": 1, "run.validation": False,
        "run.mixed_precision_training": False, "optimizer.lr": 1e-3,
    }  # fmt: skip
    values.update(extra)
    return values


def _records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def _assert_decreases(records: list[dict], key: str = "train_loss", n: int = 5) -> tuple[float, float]:
    first = float(np.mean([r[key] for r in records[:n]]))
    last = float(np.mean([r[key] for r in records[-n:]]))
    assert last < first, (key, first, last)
    return first, last


@pytest.fixture(scope="module")
def stage1(assets, tmp_path_factory) -> Path:
    """24 steps of stage 1 (batch 2) on synthetic clips whose mouth follows the speech (3 clips of 3 s), with the
    held-out loss of 8 windows of 2 other clips at steps 12 and 24."""
    root = tmp_path_factory.mktemp("stage1")
    make_sync_clips(root / "train", count=3, seconds=3.0, resolution=R, seed=0)
    make_sync_clips(root / "val", count=2, seconds=3.0, resolution=R, seed=1)
    extra = {"data.train_data_dir": "", "data.train_fileslist": str(root / "train" / "fileslist.txt"),
             "data.val_fileslist": str(root / "val" / "fileslist.txt"), "data.num_val_samples": 8,
             "data.frames_in_memory": True, "data.batch_size": 2, "run.validation_steps": 12,
             "data.audio_embeds_cache_dir": str(root / "cache")}  # fmt: skip
    return train_unet(CONFIGS / "stage1.yaml", _overrides(assets, root / "out", steps=24, stage=1, **extra))


@pytest.fixture(scope="module")
def stage2(assets, stage1, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("stage2")
    init = stage1 / "checkpoints" / "checkpoint-24.pt"
    extra = {"ckpt.resume_ckpt_path": str(init), "run.enable_gradient_checkpointing": True}
    return train_unet(CONFIGS / "stage2.yaml", _overrides(assets, output, steps=24, stage=2, **extra))


# ---- the loss pieces ----


def test_mixed_noise_statistics():
    g = torch.Generator().manual_seed(0)
    like = torch.zeros(64, 4, 16, 8, 8)
    noise = frame_noise(like, alpha=1.0, generator=g)
    assert abs(noise.var().item() - 1) < 0.02
    # Two frames share the part of variance a^2 / (1 + a^2) = 0.5.
    correlation = torch.corrcoef(torch.stack([noise[:, :, 0].flatten(), noise[:, :, 5].flatten()]))[0, 1]
    assert abs(correlation.item() - 0.5) < 0.03
    repeated = frame_noise(like, alpha=None, generator=g)
    assert torch.equal(repeated[:, :, 0], repeated[:, :, 15])


def test_one_step_x0_inverts_the_forward_process():
    scheduler = load_scheduler()
    latents, noise = torch.randn(3, 4, 2, 8, 8), torch.randn(3, 4, 2, 8, 8)
    t = torch.tensor([0, 500, 999])
    noisy = scheduler.add_noise(latents, noise, t)
    torch.testing.assert_close(predicted_x0(noisy, noise, scheduler.alphas_cumprod[t]), latents, atol=2e-4, rtol=1e-4)


def test_sync_loss_is_bce_of_the_cosine_against_one(assets):
    from latentsync.models import load_syncnet

    syncnet = load_syncnet(assets["syncnet_config"], assets["root"] / "syncnet.safetensors")
    frames, mel = torch.rand(2, 16, 3, R, R) * 2 - 1, torch.randn(2, 1, 80, 52)
    vision, audio = syncnet(frames[:, :, :, R // 2 :].flatten(1, 2), mel)
    expected = -torch.nn.functional.cosine_similarity(vision, audio).log().mean()
    torch.testing.assert_close(sync_loss(syncnet, frames, mel, resolution=R), expected)
    # Frames of another size are resized (bicubic) to the SyncNet's resolution first.
    large = torch.rand(2, 16, 3, 2 * R, 2 * R) * 2 - 1
    resized = torch.nn.functional.interpolate(large.flatten(0, 1), size=(R, R), mode="bicubic").view(2, 16, 3, R, R)
    torch.testing.assert_close(sync_loss(syncnet, large, mel, resolution=R), sync_loss(syncnet, resized, mel))


# ---- config and weights handling ----


def test_overrides_and_config_checks(tmp_path):
    cfg = load_training_config(CONFIGS / "stage2.yaml", {"run.trepa_loss_weight": 0, "data.resolution": 64})
    assert cfg["run"]["trepa_loss_weight"] == 0 and cfg["data"]["resolution"] == 64
    assert cfg["run"]["trainable_modules"] == ["motion_modules.", "attentions."]
    with pytest.raises(InputError, match="model"):
        load_training_config({"data": {"resolution": 64, "train_output_dir": "x"}})
    files = WeightFiles({"vae": str(tmp_path / "nowhere")}, 256)
    with pytest.raises(MissingWeightsError, match="nowhere"):
        files.locate({"vae": None, "whisper": None})
    # A missing path that names the published file goes through latentsync.weights.resolve (offline: a clear error).
    files = WeightFiles({"dir": str(tmp_path), "offline": True}, 256)
    with pytest.raises(MissingWeightsError, match="latentsync_unet.pt.*whisper/tiny.pt"):
        files.locate({"unet": "checkpoints/latentsync_unet.pt", "whisper": None})


def test_run_section_defaults_and_checks(tmp_path):
    assert stage_loss_weights({}) == {"recon_loss": 1.0, "sync_loss": 0.0, "lpips_loss": 0.0, "trepa_loss": 0.0}
    for change, message in (({"run.log_steps": 0}, "run.log_steps must be at least 1"),
                            ({"run.max_train_steps": -1}, "never end")):  # fmt: skip
        with pytest.raises(InputError, match=message):  # before any model is built
            train_unet(CONFIGS / "stage1.yaml", {"data.train_output_dir": str(tmp_path), **change})


def test_validation_clips_fall_back_to_the_packaged_demo(caplog):
    with caplog.at_level(logging.WARNING):
        assert Validator._clip(None, DEMO_VIDEO).name == "demo_video.mp4"
        assert not caplog.text  # nothing configured: nothing to warn about
        assert Validator._clip("assets/demo1_video.mp4", DEMO_VIDEO).name == "demo_video.mp4"
        assert "demo1_video.mp4 not found" in caplog.text
    with pytest.raises(InputError, match="packaged validation demo"):
        Validator._clip(None, "assets/demo/gone.mp4")


def test_initial_weights_and_trainable_filter(tmp_path):
    torch.manual_seed(0)
    stage1_unet = load_unet(_tiny_unet(motion=False))
    save_safetensors(stage1_unet.state_dict(), tmp_path / "s1.safetensors")
    unet = load_unet(_tiny_unet(motion=True))
    load_initial_weights(unet, tmp_path / "s1.safetensors")
    own = unet.state_dict()
    for key, value in stage1_unet.state_dict().items():
        assert torch.equal(own[key], value), key
    assert any("motion_modules." in k for k in own)
    trainable = select_trainable(unet, ["motion_modules.", "attentions."])
    names = {n for n, p in unet.named_parameters() if p.requires_grad}
    assert len(trainable) == len(names) and all("motion_modules." in n or "attentions." in n for n in names)
    assert any("attn2" in n for n in names) and not any(n.startswith("conv_in") for n in names)
    with pytest.raises(InputError, match="matches no"):
        select_trainable(unet, ["nothing."])
    torch.save({"state_dict": {"foo": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no tensor"):
        load_initial_weights(unet, tmp_path / "other.pt")


# ---- training runs ----


def test_stage1_loss_decreases_and_checkpoint_loads(stage1):
    records = [r for r in _records(stage1) if "train_loss" in r]
    assert [r["step"] for r in records] == list(range(1, 25))
    assert set(records[0]) == {"step", "train_loss", "recon_loss", "grad_norm", "lr"}
    first, last = _assert_decreases(records)
    print(f"stage 1 train_loss: first 5 {first:.4f}, last 5 {last:.4f}")
    assert (stage1 / "metrics.png").stat().st_size > 0

    config = yaml.safe_load((stage1 / "config.yaml").read_text())  # what `latentsync infer --unet-config` reads
    unet = load_unet(stage1 / "config.yaml", stage1 / "checkpoints" / "checkpoint-24.pt")
    assert config["data"]["resolution"] == R and not unet.config.use_motion_module
    # The checkpoint's tensors, put by hand into a U-Net of the saved config, give the same prediction.
    reference = load_unet(config["model"])
    reference.load_state_dict(load_state_dict(stage1 / "checkpoints" / "checkpoint-24.pt"))
    inputs = (torch.randn(1, 13, 16, R // 8, R // 8), 500, torch.randn(1, 16, 50, 64))
    with torch.no_grad():
        torch.testing.assert_close(unet(*inputs), reference.eval()(*inputs))


def test_stage2_all_losses_decrease_and_only_trainable_modules_change(stage1, stage2):
    records = _records(stage2)
    assert all(set(LOSSES) <= set(r) for r in records)
    first, last = _assert_decreases(records)
    print(f"stage 2 train_loss: first 5 {first:.4f}, last 5 {last:.4f}")
    for key in LOSSES:
        print(f"  {key}: first {records[0][key]:.4f} -> last {records[-1][key]:.4f}")
    run = yaml.safe_load((CONFIGS / "stage2.yaml").read_text())["run"]
    keys = ("recon_loss_weight", "sync_loss_weight", "perceptual_loss_weight", "trepa_loss_weight")
    weights = [run[k] for k in keys]
    expected = sum(w * records[0][k] for w, k in zip(weights, LOSSES))  # 1, 0.05, 0.1, 10
    assert math.isclose(records[0]["train_loss"], expected, rel_tol=1e-5)

    before = load_state_dict(stage1 / "checkpoints" / "checkpoint-24.pt")
    after = load_state_dict(stage2 / "checkpoints" / "checkpoint-24.pt")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("motion_modules." in k or "attentions." in k for k in changed)
    trainable = [k for k in before if "attentions." in k and k.endswith(".weight")]
    assert len(changed & set(trainable)) == len(trainable)
    unet = load_unet(stage2 / "config.yaml", stage2 / "checkpoints" / "checkpoint-24.pt")
    assert unet.config.use_motion_module


def test_resume_continues_from_the_saved_step(assets, tmp_path):
    straight = train_unet(CONFIGS / "stage1.yaml", _overrides(assets, tmp_path / "straight", steps=4, stage=1))
    split = tmp_path / "split"
    train_unet(CONFIGS / "stage1.yaml", _overrides(assets, split, steps=2, stage=1))
    resumed = train_unet(CONFIGS / "stage1.yaml", _overrides(assets, split, steps=4, stage=1, **{"run.resume": True}))
    assert [r["step"] for r in _records(resumed)] == [1, 2, 3, 4]
    for a, b in zip(_records(straight), _records(resumed)):
        assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-5), (a, b)
    a, b = (load_state_dict(p / "checkpoints" / "checkpoint-4.pt") for p in (straight, resumed))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_bf16_autocast_stage2_steps(assets, tmp_path):
    extra = {"run.mixed_precision_training": True, "run.mixed_precision_dtype": "bf16"}
    output = train_unet(CONFIGS / "stage2.yaml", _overrides(assets, tmp_path / "bf16", steps=2, stage=2, **extra))
    records = _records(output)
    assert len(records) == 2 and all(math.isfinite(r[k]) for r in records for k in ("train_loss", *LOSSES))
    state = load_state_dict(output / "checkpoints" / "checkpoint-2.pt")
    assert all(v.dtype == torch.float32 for v in state.values())  # master weights stay float32


def test_validation_video_through_the_pipeline(assets, tmp_path):
    extra = {"run.validation": True, "run.inference_steps": 2, "data.val_video_path": str(MEDIA / "demo1_360p.mp4"),
             "data.val_audio_path": str(AUDIO / "demo1_speech.flac")}  # fmt: skip
    output = train_unet(CONFIGS / "stage1.yaml", _overrides(assets, tmp_path / "val", steps=1, stage=1, **extra))
    video = output / "val_videos" / "val_video_1.mp4"
    assert video.stat().st_size > 0


@pytest.mark.parametrize("zero", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_two_process_ddp_run(assets, tmp_path, zero):
    output = tmp_path / "ddp"
    extra = {"run.zero_optimizer": zero, "ckpt.save_ckpt_steps": 1}
    config = load_training_config(CONFIGS / "stage1.yaml", _overrides(assets, output, steps=2, stage=1, **extra))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    script = tmp_path / "train.py"
    script.write_text("import sys\nfrom latentsync.training.unet import train_unet\ntrain_unet(sys.argv[1])\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), str(tmp_path / "config.yaml")]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint-1.pt", "checkpoint-2.pt"]
    assert [r["step"] for r in _records(output)] == [1, 2]
    content = torch.load(output / "checkpoints" / "checkpoint-2.pt", weights_only=True)
    trainable = sum(1 for _ in load_unet(_tiny_unet(motion=False)).parameters())
    assert len(content["optimizer"]["state"]) == trainable  # the whole AdamW state, also when sharded (ZeRO)


# ---- learning to use the audio on synthetic clips ----


def test_stage1_uses_the_audio_on_synthetic_clips(stage1):
    """After stage 1 on clips whose mouth follows the speech, the held-out noise loss with the clips' audio is
    below the same windows' loss with zero audio tokens (a U-Net that ignores the audio), and it fell."""
    held_out = [r for r in _records(stage1) if "val_loss" in r]
    print("held-out noise loss (with audio, zero audio):",
          [(r["step"], round(r["val_loss"], 4), round(r["val_loss_zero_audio"], 4)) for r in held_out])
    assert [r["step"] for r in held_out] == [12, 24]
    assert held_out[-1]["val_loss"] < held_out[-1]["val_loss_zero_audio"]
    assert held_out[-1]["val_loss"] < held_out[0]["val_loss"]
    gaps = [r["val_loss_zero_audio"] - r["val_loss"] for r in held_out]
    assert gaps[1] > gaps[0]  # the U-Net leans on the audio more as it trains
