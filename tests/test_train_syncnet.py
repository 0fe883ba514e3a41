"""SyncNet training on prepared clips: learning happens, metrics / chart / checkpoints, exact resume, 2-process
DDP on CPU; and the shared training infrastructure (sampler, overrides, metrics log, checkpoints)."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import latentsync

from conftest import MEDIA
from latentsync.audio import load_audio
from latentsync.checkpoint import load_state_dict
from latentsync.cli import train_cmds
from latentsync.data.datasets import SyncNetDataset, read_fileslist
from latentsync.data.prepare import PrepareSettings, prepare_dataset
from latentsync.errors import CheckpointError, InputError
from latentsync.media import probe_video, read_frames
from latentsync.models.syncnet import load_syncnet
from latentsync.testing import make_sync_clips
from latentsync.training.losses import SyncNetObjective, contrastive_sync_loss, syncnet_loss
from latentsync.training.checkpoints import latest_checkpoint, load_training_state, save_checkpoint
from latentsync.training.distributed import DistInfo
from latentsync.training.metrics import MetricsLog
from latentsync.training.precision import autocast_and_scaler
from latentsync.training.sampling import TrainSampler
from latentsync.training.settings import apply_overrides, cache_folder, configured_path, run_settings
from latentsync.training.syncnet import learning_rate_factor, objective as train_syncnet_objective, train_syncnet

torch.set_num_threads(1)
SYNTHETIC_STEPS = 1000


def small_config(clips_list, output_dir, **data) -> dict:
    """A small StableSyncNet (4.3 M parameters) on 32 x 32 faces, lower half (48 x 16 x 32)."""
    return {
        "model": {
            "audio_encoder": {  # (1, 80, 52) -> 1 x 1
                "in_channels": 1,
                "block_out_channels": [32, 32, 64, 64, 128, 256],
                "downsample_factors": [[2, 1], 2, 2, 2, 2, [2, 3]],
                "attn_blocks": [0, 0, 0, 0, 0, 0],
                "dropout": 0.0,
            },
            "visual_encoder": {  # (48, 16, 32) -> 1 x 1; 256 channels: 8 per GroupNorm group on the 1 x 1 map
                "in_channels": 48,
                "block_out_channels": [32, 64, 64, 128, 256],
                "downsample_factors": [[1, 2], 2, 2, 2, 2],
                "attn_blocks": [0, 0, 0, 0, 0],
                "dropout": 0.0,
            },
        },
        "ckpt": {"resume_ckpt_path": "", "save_ckpt_steps": 20},
        "data": {
            "train_output_dir": str(output_dir),
            "train_fileslist": str(clips_list),
            "train_data_dir": "",
            "num_val_samples": 16,
            "batch_size": 16,
            "gradient_accumulation_steps": 1,
            "num_workers": 0,
            "latent_space": False,
            "num_frames": 16,
            "resolution": 32,
            "lower_half": True,
            "audio_mel_cache_dir": str(output_dir.parent / "cache"),
            **data,
        },
        "optimizer": {"lr": 1e-3, "max_grad_norm": 1.0},
        "run": {"max_train_steps": 40, "validation_steps": 20, "mixed_precision_training": True, "seed": 42, "log_steps": 5},
    }


@pytest.fixture(scope="module")
def clips_list(tmp_path_factory):
    """The three 6 s demo videos prepared at 64 px (the datasets shrink them to 32 px)."""
    root = tmp_path_factory.mktemp("syncnet_data")
    (root / "raw").mkdir()
    for i in (1, 2, 3):
        shutil.copy(MEDIA / f"demo{i}_6s.mp4", root / "raw" / f"demo{i}.mp4")
    settings = PrepareSettings(64, face_backend="mediapipe", skip=("sync", "quality"))  # no filter weights here
    report = prepare_dataset(root / "raw", root / "clips", settings, progress=False)
    return report.fileslist


@pytest.fixture(scope="module")
def trained(clips_list, tmp_path_factory):
    """40 steps on a fixed set of 8 samples per clip (24 in all): enough to learn them by heart. The cache and
    the validation clips are left as the packaged configs have them: not given."""
    output = tmp_path_factory.mktemp("syncnet_run") / "out"
    config = small_config(clips_list, output, samples_per_clip=8, audio_mel_cache_dir="", val_data_dir="")
    train_syncnet(config)
    return config, output


def test_learning_happens(trained):
    _, output = trained
    records = [r for r in MetricsLog(output).records() if "train_loss" in r]
    first, last = records[0], records[-1]
    print(f"syncnet training: loss {first['train_loss']:.3f} -> {last['train_loss']:.3f}, "
          f"accuracy {first['train_acc']:.2f} -> {last['train_acc']:.2f} in {last['step']} steps")
    # The best loss of the second half: once pairs are learnt by heart, a cosine that saturates at exactly 0 or 1
    # on a wrong pair costs the published BCE 100 for that pair. One CI run showed it: loss 0.17 at step 25, then
    # 1.35 and 5.09 at steps 35 and 40 while the accuracy stayed at 0.90.
    late = records[len(records) // 2 :]
    assert min(r["train_loss"] for r in late) < 0.6 < first["train_loss"] + 0.05  # chance is 0.69
    assert last["train_acc"] > 0.75


def test_metrics_and_chart(trained):
    _, output = trained
    records = MetricsLog(output).records()
    assert [r["step"] for r in records if "train_loss" in r] == list(range(5, 41, 5))
    validation = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in validation] == [20, 40]
    assert (output / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((output / "cache" / "mel").iterdir())  # instead of /mnt/bn/...
    # The last validation, recomputed from the saved checkpoint: the training clips (no held-out ones were
    # given), seed 42 + 1, the first num_val_samples ids.
    config, _ = trained
    data = config["data"]
    dataset = SyncNetDataset(read_fileslist(data["train_fileslist"]), resolution=32, seed=43)
    model = load_syncnet(config, output / "checkpoints" / "checkpoint-40.pt")
    items = [dataset[i] for i in range(data["num_val_samples"])]
    with torch.no_grad():
        vision, audio = model(torch.stack([i["frames"] for i in items]), torch.stack([i["mel"] for i in items]))
    labels = torch.stack([i["label"] for i in items])
    loss, scores = syncnet_loss(vision, audio, labels)
    assert math.isclose(validation[-1]["val_loss"], loss.item(), rel_tol=1e-4)
    assert validation[-1]["val_acc"] == ((scores > 0.5) == (labels > 0.5)).float().mean().item()


def test_checkpoints_load_with_load_syncnet(trained):
    config, output = trained
    paths = sorted((output / "checkpoints").glob("*.pt"))
    assert [p.name for p in paths] == ["checkpoint-20.pt", "checkpoint-40.pt"]
    content = torch.load(paths[-1], weights_only=True)
    assert content["global_step"] == 40 and {"state_dict", "optimizer"} <= set(content)
    model = load_syncnet(config, paths[-1])
    assert set(model.state_dict()) == set(load_state_dict(paths[-1]))
    assert latest_checkpoint(output) == paths[-1]


def test_resume_continues_exactly(clips_list, tmp_path):
    """2 steps, 'killed', resumed to 4: the same weights as 4 uninterrupted steps."""
    tiny = dict(batch_size=4, num_val_samples=4)
    straight = small_config(clips_list, tmp_path / "straight", **tiny)
    straight["run"].update(max_train_steps=4, validation_steps=2, log_steps=1)
    straight["ckpt"]["save_ckpt_steps"] = 2
    train_syncnet(straight)

    interrupted = apply_overrides(straight, {"data.train_output_dir": str(tmp_path / "resumed"), "run.max_train_steps": 2})
    train_syncnet(interrupted)
    (tmp_path / "resumed" / "metrics.jsonl").open("a").write('{"step": 3, "train_loss": 9.0}\n')  # lost with the kill
    train_syncnet(apply_overrides(interrupted, {"run.max_train_steps": 4, "run.resume": True}))

    a = torch.load(tmp_path / "straight" / "checkpoints" / "checkpoint-4.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "checkpoint-4.pt", weights_only=True)
    assert b["global_step"] == 4
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-6)
    steps = [r["step"] for r in MetricsLog(tmp_path / "resumed").records() if "train_loss" in r]
    assert steps == [1, 2, 3, 4]
    assert MetricsLog(tmp_path / "resumed").records() == MetricsLog(tmp_path / "straight").records()


def test_two_process_ddp_on_cpu(clips_list, tmp_path):
    config = small_config(clips_list, tmp_path / "ddp", batch_size=2, num_val_samples=4)
    config["run"].update(max_train_steps=2, validation_steps=2, log_steps=1)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    launcher = tmp_path / "launch.py"  # the `latentsync train-syncnet` command, as torchrun would start it
    launcher.write_text(
        "import argparse, sys\n"
        "from latentsync.cli import train_cmds\n"
        "parser = argparse.ArgumentParser()\n"
        "train_cmds.register(parser.add_subparsers())\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "args.run(args)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(launcher), "train-syncnet", "--config", str(config_path), "--device", "cpu"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir()] == ["checkpoint-2.pt"]
    records = MetricsLog(tmp_path / "ddp").records()
    assert [r["step"] for r in records if "train_loss" in r] == [1, 2]  # one line per step: rank 0 writes
    assert any("val_acc" in r for r in records)


def test_cli_options_become_overrides():
    parser = argparse.ArgumentParser()
    train_cmds.register(parser.add_subparsers())
    args = parser.parse_args([
        "train-syncnet", "--config", "c.yaml", "--output-dir", "out", "--data-dir", "clips", "--max-steps", "7",
        "--resume", "--set", "optimizer.lr=3e-4", "--set", "data.lower_half=false",
    ])
    assert train_cmds.training_overrides(args) == {
        "data.train_data_dir": "clips", "data.train_fileslist": "", "data.train_output_dir": "out",
        "run.max_train_steps": 7, "run.resume": True, "optimizer.lr": 3e-4, "data.lower_half": False,
        "data.val_data_dir": "", "data.val_fileslist": "",  # new training data: the config's validation set goes too
    }
    held_out = parser.parse_args(["train-syncnet", "--config", "c.yaml", "--val-fileslist", "val.txt"])
    assert train_cmds.training_overrides(held_out) == {"data.val_data_dir": "", "data.val_fileslist": "val.txt"}
    unet = parser.parse_args(["train-unet", "--config", "c.yaml", "--data-dir", "clips"])
    assert train_cmds.training_overrides(unet) == {"data.train_data_dir": "clips", "data.train_fileslist": ""}
    with pytest.raises(InputError):
        train_cmds.training_overrides(parser.parse_args(["train-unet", "--config", "c.yaml", "--set", "oops"]))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"data.latent_space": True}, "latent-space"),
        ({"data.num_frames": 25}, "in_channels"),
        ({"run.log_steps": 0}, "run.log_steps must be at least 1"),
        ({"ckpt.save_ckpt_steps": 0}, "ckpt.save_ckpt_steps must be at least 1"),
        ({"run.max_train_steps": -1}, "never end"),
    ],
)
def test_bad_configs_fail_early(tmp_path, change, message):
    config = apply_overrides(small_config(tmp_path / "list.txt", tmp_path / "out"), change)
    with pytest.raises(InputError, match=message):
        train_syncnet(config)


def test_sampler_splits_ranks_and_resumes():
    def ids(rank, start_step=0, steps=6):
        sampler = TrainSampler(10, 3, seed=1, dist=DistInfo(rank, 2, torch.device("cpu"), rank == 0), start_step=start_step)
        iterator = iter(sampler)
        return [next(iterator) for _ in range(3 * steps)]

    rank0, rank1 = ids(0), ids(1)
    first_pass = sorted(i % 10 for i in (rank0[:3] + rank1[:3] + rank0[3:6] + rank1[3:6] + rank0[6:9] + rank1[6:9])[:10])
    assert first_pass == list(range(10))  # one pass visits every clip once, split over the ranks
    assert ids(0, start_step=4, steps=2) == rank0[12:18]  # resuming at step 4 continues the same order
    assert max(rank0 + rank1) >= 10  # later passes use new ids (new windows)


def test_metrics_log_drops_lines_of_a_killed_run(tmp_path):
    log = MetricsLog(tmp_path)
    for step in (1, 2, 3):
        log.log(step, train_loss=1.0 / step)
    resumed = MetricsLog(tmp_path, start_step=2)
    assert [r["step"] for r in resumed.records()] == [1, 2]
    assert resumed.plot().exists()


def test_latest_checkpoint_is_numeric(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (9, 10, 100):
        (folder / f"checkpoint-{step}.pt").write_bytes(b"")
    (folder / "checkpoint-x.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path).name == "checkpoint-100.pt"
    assert latest_checkpoint(tmp_path / "none") is None


def test_cpu_precision_is_fp32_unless_bf16_asked():
    context, scaler = autocast_and_scaler("cpu", mixed_precision=True)
    with context():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert scaler is None
    context, _ = autocast_and_scaler("cpu", mixed_precision=True, dtype="bf16")
    with context():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_missing_matplotlib_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(InputError, match=r"latentsync\[train\]"):
        train_syncnet(small_config(tmp_path / "list.txt", tmp_path / "out"))


def test_run_settings_defaults_and_limits():
    settings = run_settings({"run": {"max_train_epochs": 2}}, seed=7, save_ckpt_steps=30)
    assert (settings.seed, settings.save_ckpt_steps, settings.log_steps, settings.lr) == (7, 30, 10, 1e-5)
    assert settings.total_steps(clips=10, samples_per_step=4) == 6  # 2 passes of 3 steps
    settings = run_settings({"run": {"max_train_steps": 5, "max_train_epochs": -1}}, seed=7, save_ckpt_steps=30)
    assert settings.max_train_epochs is None and settings.total_steps(10, 4) == 5
    with pytest.raises(InputError, match="whole number"):
        run_settings({"run": {"max_train_steps": 2.5}}, seed=7, save_ckpt_steps=30)
    with pytest.raises(InputError, match="optimizer.lr must be positive"):
        run_settings({"run": {"max_train_steps": 5}, "optimizer": {"lr": 0}}, seed=7, save_ckpt_steps=30)


def test_packaged_configs_name_no_cluster_paths_and_empty_paths_count_as_not_given(tmp_path):
    configs = Path(latentsync.__file__).parent / "configs"
    for path in configs.rglob("*.yaml"):
        assert "/mnt/" not in path.read_text(), path
    data = {"audio_mel_cache_dir": "", "mine": str(tmp_path / "mine" / "mel")}
    assert configured_path(data, "audio_mel_cache_dir") is None and configured_path(data, "val_data_dir") is None
    assert configured_path(data, "mine") == tmp_path / "mine" / "mel"  # used as given, created on demand
    assert cache_folder(data, "audio_mel_cache_dir", tmp_path / "out") == tmp_path / "out" / "cache"
    assert cache_folder(data, "mine", tmp_path / "out").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="writable"):
        cache_folder({"blocked": str(tmp_path / "file" / "cache")}, "blocked", tmp_path / "out")


def test_resume_errors_name_the_cause(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path, 1, model, optimizer)
    same = torch.nn.Linear(3, 2)
    assert load_training_state(path, same, torch.optim.AdamW(same.parameters())) == 1
    assert torch.equal(same.weight, model.weight)
    with pytest.raises(CheckpointError, match="does not match"):
        load_training_state(path, torch.nn.Linear(4, 2))
    fewer = torch.nn.Linear(3, 2)  # as if run.trainable_modules had changed
    with pytest.raises(CheckpointError, match="trainable_modules"):
        load_training_state(path, fewer, torch.optim.AdamW([fewer.weight]))


# ---- learning sync on synthetic clips ----


def test_synthetic_clips_have_the_prepare_layout_and_a_known_relation(tmp_path):
    clips = make_sync_clips(tmp_path, count=2, seconds=2.0, resolution=48, seed=3)
    assert (tmp_path / "fileslist.txt").read_text().split() == ["clip_000.mp4", "clip_001.mp4"]
    info = probe_video(clips[0].path)
    assert (info.width, info.height, info.frames_at(25)) == (48, 48, 50)
    audio = load_audio(clips[0].path)
    assert abs(len(audio) - 2 * 16000) < 1600
    # The mouth (dark pixels of the lower half) opens with the opening the clip was made with, and widens with
    # its width while it is open ...
    frames = np.stack([f for _, f in read_frames(clips[0].path)])
    dark = frames[:, 24:].mean(axis=3) < 90
    assert np.corrcoef(dark.mean(axis=(1, 2)), clips[0].opening)[0, 1] > 0.9
    voiced = clips[0].opening > 0.3
    assert 10 < voiced.sum() < 40  # both open and closed stretches
    assert np.corrcoef(dark.any(axis=1).sum(axis=1)[voiced], clips[0].width[voiced])[0, 1] > 0.9
    # ... and the speech is loud exactly then (RMS per 40 ms frame), its pitch rising with the width: the
    # fundamental from each frame's autocorrelation, one octave over the width's range.
    per_frame = audio[: 50 * 640].reshape(50, 640)
    assert np.corrcoef(np.sqrt((per_frame**2).mean(axis=1)), clips[0].opening)[0, 1] > 0.9
    lags = [np.correlate(x, x, "full")[len(x) - 1 :][53:200].argmax() + 53 for x in per_frame[voiced]]
    octaves = np.log2(16000 / np.array(lags))
    assert np.corrcoef(octaves, clips[0].width[voiced])[0, 1] > 0.9
    assert 0.7 < np.polyfit(clips[0].width[voiced], octaves, 1)[0] < 1.3
    # A sound or pause lasts one frame by default (the mouth changes at most frames); `segment_frames` lengthens them.
    changes = lambda opening: (np.abs(np.diff(opening)) > 0.05).mean()  # noqa: E731
    syllables = make_sync_clips(tmp_path / "slow", count=1, seconds=2.0, resolution=16, seed=3, segment_frames=(4, 4))
    assert changes(clips[0].opening) > 0.6 and changes(syllables[0].opening) < 0.3
    with pytest.raises(ValueError, match="segment_frames"):
        make_sync_clips(tmp_path / "bad", segment_frames=(0, 2))


def test_contrastive_term_reference_values():
    eye = torch.eye(2)
    labels = torch.ones(2)
    # logits [[2, 0], [0, 2]] at temperature 0.5: cross-entropy log(1 + e^-2) in both directions.
    expected = math.log(1 + math.exp(-2))
    assert math.isclose(contrastive_sync_loss(eye, eye, labels, 0.5).item(), expected, rel_tol=1e-6)
    # Off-sync pairs take no part; fewer than two in-sync pairs give 0.
    assert contrastive_sync_loss(eye, eye, torch.tensor([1.0, 0.0]), 0.5).item() == 0
    vision, audio = torch.rand(6, 8), torch.rand(6, 8)
    vision, audio = (torch.nn.functional.normalize(x, dim=1) for x in (vision, audio))
    labels = torch.tensor([1.0, 0, 1, 1, 0, 1])
    published, _ = syncnet_loss(vision, audio, labels)
    assert torch.equal(SyncNetObjective()(vision, audio, labels)[0], published)  # weight 0: the published loss
    mixed, scores = SyncNetObjective(0.5, 0.1)(vision, audio, labels)
    torch.testing.assert_close(mixed, published + 0.5 * contrastive_sync_loss(vision, audio, labels, 0.1))
    torch.testing.assert_close(scores, (vision * audio).sum(1))


def test_same_clip_negatives_join_the_frames_candidates():
    eye = torch.eye(3)
    labels = torch.ones(2)
    # Frames 0 and 1 pick among audio [e0, e1] and the other windows [e2, e0]: row 0 has logits [2, 0, 0, 2]
    # (its own other window equals its audio here), row 1 [0, 2, 0, 0]; the audio side is unchanged.
    vision, audio, other = eye[:2], eye[:2], eye[[2, 0]]
    frames_side = (math.log(2 * math.exp(2) + 2) - 2 + math.log(math.exp(2) + 3) - 2) / 2
    audio_side = math.log(1 + math.exp(-2))
    expected = (frames_side + audio_side) / 2
    assert math.isclose(contrastive_sync_loss(vision, audio, labels, 0.5, other).item(), expected, rel_tol=1e-6)
    objective = SyncNetObjective(1.0, 0.5, same_clip_negatives=True)
    loss, _ = objective(vision, audio, labels, other)
    assert math.isclose(loss.item(), syncnet_loss(vision, audio, labels)[0].item() + expected, rel_tol=1e-6)


def test_learning_rate_schedule():
    # 50 warm-up steps of 300: 1/50 .. 1 linearly, then constant or a half cosine that ends just above 0.
    assert [learning_rate_factor(s, 50, 300, False) for s in (0, 48, 49, 299)] == [0.02, 0.98, 1.0, 1.0]
    cosine = [learning_rate_factor(s, 50, 300, True) for s in (0, 49, 174, 299)]
    assert cosine[:2] == [0.02, 1.0] and math.isclose(cosine[2], 0.5, abs_tol=0.01) and 0 < cosine[3] < 1e-3
    assert learning_rate_factor(0, 1, 10, False) == 1.0  # no warm-up: the published constant rate
    with pytest.raises(InputError, match="lr_schedule"):
        train_syncnet(small_config("unused.txt", Path("unused"), **{}) | {"optimizer": {"lr": 1e-3, "lr_schedule": "step"}})


def test_scaled_logit_loss_reference_values():
    # Cosines 0.8 (in sync) and 0.6 (off sync) at scale 10: logits 3 and 1, BCE log(1 + e^-3) and log(1 + e^1).
    vision = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    audio = torch.tensor([[0.8, 0.6], [0.6, 0.8]])
    loss, scores = SyncNetObjective(logit_scale=10.0)(vision, audio, torch.tensor([1.0, 0.0]))
    expected = (math.log(1 + math.exp(-3)) + math.log(1 + math.exp(1))) / 2
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    torch.testing.assert_close(scores, torch.tensor([0.8, 0.6]))  # the decision stays cosine > 0.5
    with pytest.raises(InputError, match="contrastive_loss_weight"):
        train_syncnet_objective({"contrastive_same_clip_negatives": True})  # needs the contrastive term
    with pytest.raises(InputError, match="sync_logit_scale"):
        train_syncnet_objective({"sync_logit_scale": -1})


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    """12 training and 4 held-out synthetic clips of 6 s at 32 px, written as `prepare` lays them out."""
    root = tmp_path_factory.mktemp("synthetic_sync")
    make_sync_clips(root / "train", count=12, seconds=6.0, resolution=32, seed=0)
    make_sync_clips(root / "val", count=4, seconds=6.0, resolution=32, seed=1)
    return root


@pytest.mark.slow
def test_learns_sync_on_synthetic_clips(synthetic_set, tmp_path):
    """`latentsync train-syncnet` on clips whose mouth follows the speech reaches 0.9 held-out accuracy.

    The setting (README, "Training StableSyncNet"): the contrastive term, warm-up, the BCE of the logit
    10 * (cosine - 0.5) and a cosine learning rate, 1000 steps (8 minutes on two threads). Over steps 800-1000 the
    held-out accuracy (512 samples, standard error about 0.013) was 0.90-0.93 in the runs of this seed and of seed
    7; the arithmetic (thread count, machine) changes the curve a little, so the test asks for 0.9 at one of the
    last three validations and at least 0.87 at all three. Some seeds collapse at the start and stay at chance
    (README); this one did not in any run we made. With the published loss alone this model stays at chance for
    hundreds of steps."""
    config = small_config(synthetic_set / "train" / "fileslist.txt", tmp_path / "unused")
    config_path = tmp_path / "syncnet.yaml"
    config_path.write_text(yaml.safe_dump(config))
    parser = argparse.ArgumentParser()
    train_cmds.register(parser.add_subparsers())
    output = tmp_path / "run"
    args = parser.parse_args([
        "train-syncnet", "--config", str(config_path), "--device", "cpu", "--output-dir", str(output),
        "--fileslist", str(synthetic_set / "train" / "fileslist.txt"),
        "--val-fileslist", str(synthetic_set / "val" / "fileslist.txt"), "--cache-dir", str(tmp_path / "cache"),
        "--max-steps", str(SYNTHETIC_STEPS), "--lr", "1e-3", "--batch-size", "16",
        "--set", "optimizer.lr_warmup_steps=50", "--set", "optimizer.lr_schedule=cosine",
        "--set", "run.contrastive_loss_weight=1.0", "--set", "run.sync_logit_scale=10",
        "--set", "data.frames_in_memory=true", "--set", "data.num_val_samples=512",
        "--set", "run.validation_steps=100", "--set", "run.log_steps=25", "--set", "run.mixed_precision_training=false",
        "--set", "ckpt.save_ckpt_steps=500",
    ])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the CI machine's two cores; the rest of this module runs on one
    try:
        args.run(args)
    finally:
        torch.set_num_threads(threads)
    records = MetricsLog(output).records()
    validation = [r for r in records if "val_acc" in r]
    print("held-out accuracy by step:", [(r["step"], round(r["val_acc"], 3)) for r in validation])
    assert next(r for r in records if "train_acc" in r)["train_acc"] < 0.7  # steps 1-25: near chance
    assert validation[0]["val_acc"] < 0.85  # step 100: still learning
    last = {r["step"]: r["val_acc"] for r in validation[-3:]}
    assert list(last) == [SYNTHETIC_STEPS - 200, SYNTHETIC_STEPS - 100, SYNTHETIC_STEPS]
    assert max(last.values()) >= 0.9 and min(last.values()) >= 0.87
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint-1000.pt", "checkpoint-500.pt"]
    assert any((tmp_path / "cache" / "mel").iterdir())
