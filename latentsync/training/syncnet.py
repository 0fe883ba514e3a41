"""Training StableSyncNet (SPEC 8 and 10) from a published SyncNet config.

Each sample is 16 aligned frames (lower half) and a mel window, in sync or from another window of the same clip,
50/50. The score is the cosine similarity of the two L2-normalised embeddings (in [0, 1]: both come out of a
ReLU), the loss is its binary cross-entropy against the label, and a score above 0.5 counts as "in sync".

Config sections used: `model:` (the encoders), `data:` (clips, batch size, workers, frames, resolution,
lower_half, caches, output folder), `optimizer:` (lr, max_grad_norm), `run:` (max_train_steps and / or
max_train_epochs, validation_steps, mixed_precision_training, seed; this project adds `device`, `resume`,
`log_steps` and `mixed_precision_dtype` = auto | bf16 | fp16),
`ckpt:` (save_ckpt_steps; resume_ckpt_path = initial weights, e.g. the published stable_syncnet.pt).
Empty data paths (as in the packaged configs, which drop the authors' cluster folders) count as not given: the
cache goes to `<train_output_dir>/cache`, validation falls back to the training clips.
Also added: `data.samples_per_clip` (a fixed set of samples per clip instead of fresh windows on every pass;
for checking that a small model can learn a small set), `data.frames_in_memory` (decode each clip once; small
sets), `optimizer.lr_warmup_steps` (linear warm-up; 0 as published) and `run.contrastive_loss_weight` /
`run.contrastive_temperature` (an in-batch contrastive term added to the BCE; 0 as published), which take a small
model off the 0.69 plateau where the published loss leaves every score at 0.5 (see `losses.SyncNetObjective`);
`run.contrastive_same_clip_negatives` (off-sync windows of the same clip as extra contrastive candidates),
`run.sync_logit_scale` (BCE of scale * (cosine - 0.5); 0 as published) and `optimizer.lr_schedule` (constant as
published, or cosine).
Validation always reports the published BCE, so that runs with and without the extra term compare.

Outputs in data.train_output_dir: checkpoints/checkpoint-<step>.pt ({"state_dict", "global_step", "optimizer",
"scaler"}; loads with `load_syncnet`), metrics.jsonl (step, train_loss, train_acc, and val_loss / val_acc at
validation steps) and metrics.png.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch
from torch.utils.data import DataLoader

from ..config import load_config
from ..data.datasets import SyncNetDataset, read_fileslist
from ..errors import InputError
from ..models.syncnet import StableSyncNet, load_syncnet
from .checkpoints import latest_checkpoint, load_training_state, save_checkpoint
from .distributed import all_reduce_sum, cleanup_distributed, DistInfo, setup_distributed, wrap_ddp
from .metrics import MetricsLog
from .precision import autocast_and_scaler
from .sampling import seed_everything, TrainSampler
from .settings import apply_overrides, cache_folder, check_plotting, configured_path, run_settings, RunSettings
from .losses import SyncNetObjective, syncnet_loss

log = logging.getLogger(__name__)


def train_syncnet(config_path: str | os.PathLike | Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Path:
    """Train StableSyncNet as the config (plus dotted overrides, see `apply_overrides`) says; returns the output folder.

    Runs in one process, or as one rank of a torchrun job (DDP: NCCL on CUDA, gloo on CPU).
    """
    config = apply_overrides(load_config(config_path), overrides)
    _check_config(config)
    settings = run_settings(config, seed=42, save_ckpt_steps=2500)  # the published SyncNet values
    check_plotting()
    dist = setup_distributed(config["run"].get("device"))
    try:
        return _train(config, settings, dist)
    finally:
        cleanup_distributed()


def _train(config: dict[str, Any], settings: RunSettings, dist: DistInfo) -> Path:
    """Setup, then the loop: one optimiser step per iteration, with logging, validation and checkpoints at their
    intervals."""
    t = setup(config, settings, dist)
    totals = torch.zeros(3, device=dist.device)  # loss sum, correct, samples since the last log line
    started, first_step = time.time(), t.step
    while t.step < t.max_steps:
        # ---- one optimiser step ----
        totals += train_step(t)
        t.step += 1

        # ---- metrics: averaged over the steps since the last line, and over the ranks ----
        if t.step % settings.log_steps == 0 or t.step == t.max_steps:
            loss_sum, correct, count = all_reduce_sum(totals).tolist()
            t.metrics.log(t.step, train_loss=loss_sum / count, train_acc=correct / count)
            if dist.is_main:
                rate = (t.step - first_step) / max(time.time() - started, 1e-9)
                log.info("step %d: train loss %.4f, acc %.3f (%.2f steps/s)", t.step, loss_sum / count, correct / count, rate)
            totals.zero_()

        # ---- validation on the fixed held-out samples ----
        if t.step % settings.validation_steps == 0 or t.step == t.max_steps:
            val_loss, val_acc = validate(t)
            t.metrics.log(t.step, val_loss=val_loss, val_acc=val_acc)
            t.metrics.plot()
            if dist.is_main:
                log.info("step %d: validation loss %.4f, accuracy %.3f", t.step, val_loss, val_acc)

        # ---- checkpoint ----
        if t.step % settings.save_ckpt_steps == 0 or t.step == t.max_steps:
            save_checkpoint(t.output_dir, t.step, t.model, t.optimizer, t.scaler)
    return t.output_dir


@dataclass
class SyncNetTraining:
    """Everything the loop works with, built by `setup`; `step` counts the optimiser steps done."""

    dist: DistInfo
    output_dir: Path
    model: StableSyncNet
    ddp_model: torch.nn.Module  # the model, under DDP when several processes train
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    autocast: Callable[[], Any]
    objective: SyncNetObjective
    lr: float
    warmup: int  # linear warm-up over this many steps (1: none, as published)
    cosine_decay: bool  # after the warm-up, lr follows a half cosine down to 0 at max_steps (False: constant)
    max_grad_norm: float
    accumulation: int  # micro-batches per optimiser step
    batches: Iterator[dict[str, Any]]
    val_set: SyncNetDataset
    val_ids: list[int]
    loader_args: dict[str, Any]
    metrics: MetricsLog
    max_steps: int
    step: int


def setup(config: dict[str, Any], settings: RunSettings, dist: DistInfo) -> SyncNetTraining:
    """The model and optimiser (resumed when asked, every rank from the same weights), and the data: an endless,
    resumable stream of training samples and fixed validation samples (held-out clips, else the training clips)."""
    data, run, opt, ckpt = config["data"], config["run"], config["optimizer"], config.get("ckpt", {})
    output_dir = Path(data.get("train_output_dir") or "debug/syncnet")
    seed = settings.seed
    batch_size, accumulation = int(data["batch_size"]), int(data.get("gradient_accumulation_steps", 1))

    # ---- model and optimiser; DDP also broadcasts rank 0's weights ----
    seed_everything(seed)
    model = load_syncnet(config, ckpt.get("resume_ckpt_path") or None, device=dist.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    autocast, scaler = autocast_and_scaler(
        dist.device, bool(run.get("mixed_precision_training", False)), run.get("mixed_precision_dtype", "auto")
    )
    step = 0
    resume_from = latest_checkpoint(output_dir) if run.get("resume") else None
    if resume_from is not None:
        step = load_training_state(resume_from, model, optimizer, scaler)
        log.info("resuming from %s (step %d)", resume_from, step)
    elif run.get("resume"):
        log.info("no checkpoint in %s yet: starting from step 0", output_dir)
    seed_everything(seed, dist.rank)

    # ---- data ----
    frames_args = dict(resolution=int(data["resolution"]), num_frames=int(data["num_frames"]),
                       lower_half=bool(data.get("lower_half", True)),
                       frames_in_memory=bool(data.get("frames_in_memory", False)),
                       cache_dir=cache_folder(data, "audio_mel_cache_dir", output_dir))  # fmt: skip
    train_clips = read_fileslist(configured_path(data, "train_fileslist"), configured_path(data, "train_data_dir"))
    val_fileslist, val_data_dir = configured_path(data, "val_fileslist"), configured_path(data, "val_data_dir")
    if val_fileslist or val_data_dir:
        val_clips = read_fileslist(val_fileslist, val_data_dir, purpose="validation")
    else:
        log.warning("no validation clips given (data.val_fileslist / val_data_dir): validating on training clips")
        val_clips = train_clips
    loss = objective(run)
    train_set = SyncNetDataset(train_clips, seed=seed, samples_per_clip=data.get("samples_per_clip"),
                               other_mel=loss.same_clip_negatives, **frames_args)  # fmt: skip
    sampler = TrainSampler(len(train_set), batch_size, seed, dist, start_step=step * accumulation)
    workers = int(data.get("num_workers", 0))
    loader_args = dict(batch_size=batch_size, num_workers=workers, pin_memory=dist.device.type == "cuda")
    max_steps = settings.total_steps(len(train_set), batch_size * accumulation * dist.world_size)
    if dist.is_main:
        log.info("%d training clips, %d validation clips; step %d of %d", len(train_clips), len(val_clips), step, max_steps)
    return SyncNetTraining(
        dist=dist, output_dir=output_dir, model=model, ddp_model=wrap_ddp(model, dist), optimizer=optimizer,
        scaler=scaler, autocast=autocast, objective=loss, lr=settings.lr,
        warmup=max(1, int(opt.get("lr_warmup_steps", 0))), cosine_decay=_lr_schedule(opt) == "cosine",
        max_grad_norm=float(opt.get("max_grad_norm", 1.0)),
        accumulation=accumulation,
        batches=iter(DataLoader(train_set, sampler=sampler, persistent_workers=workers > 0, **loader_args)),
        val_set=SyncNetDataset(val_clips, seed=seed + 1, **frames_args),
        val_ids=list(range(dist.rank, int(data.get("num_val_samples", 2048)), dist.world_size)),
        loader_args=loader_args, metrics=MetricsLog(output_dir, start_step=step), max_steps=max_steps, step=step,
    )  # fmt: skip


def objective(run: Mapping[str, Any]) -> SyncNetObjective:
    """The training loss the `run:` section asks for (the published BCE of the cosine unless
    `contrastive_loss_weight` or `sync_logit_scale` is set)."""
    try:
        weight = float(run.get("contrastive_loss_weight", 0.0))
        temperature = float(run.get("contrastive_temperature", 0.1))
        same_clip = run.get("contrastive_same_clip_negatives", False)
        logit_scale = float(run.get("sync_logit_scale", 0.0))
    except (TypeError, ValueError) as exc:
        raise InputError(f"run.contrastive_loss_weight, contrastive_temperature and sync_logit_scale must be numbers: {exc}",
                         "e.g. --set run.contrastive_loss_weight=1") from exc
    if weight < 0 or temperature <= 0 or logit_scale < 0:
        raise InputError(f"run.contrastive_loss_weight and run.sync_logit_scale must be >= 0 and "
                         f"run.contrastive_temperature > 0, got {weight}, {logit_scale} and {temperature}",
                         "e.g. 1.0, 10 and 0.1; 0 and 0 are the published loss")  # fmt: skip
    if not isinstance(same_clip, bool) or (same_clip and not weight):
        raise InputError(f"run.contrastive_same_clip_negatives must be true or false and needs "
                         f"run.contrastive_loss_weight > 0, got {same_clip!r} with weight {weight}",
                         "set run.contrastive_loss_weight=1 with it, or leave it false")  # fmt: skip
    return SyncNetObjective(weight, temperature, same_clip, logit_scale)


def _lr_schedule(opt: Mapping[str, Any]) -> str:
    """`optimizer.lr_schedule`, checked: constant (as published) or cosine."""
    schedule = opt.get("lr_schedule", "constant")
    if schedule not in ("constant", "cosine"):
        raise InputError(f"optimizer.lr_schedule must be constant or cosine, got {schedule!r}",
                         "leave it out for the published constant rate")  # fmt: skip
    return schedule


def learning_rate_factor(step: int, warmup: int, max_steps: int, cosine_decay: bool) -> float:
    """The share of the configured lr at optimiser step `step` (0-based): linear warm-up over `warmup` steps,
    then constant, or a half cosine from 1 down to 0 at `max_steps`."""
    if step + 1 < warmup:
        return (step + 1) / warmup
    if not cosine_decay:
        return 1.0
    done = (step + 1 - warmup) / (max_steps - warmup + 1)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))


def train_step(t: SyncNetTraining) -> torch.Tensor:
    """One optimiser step over `accumulation` micro-batches; returns [loss sum, correct, samples] of its batches."""
    device, totals = t.dist.device, torch.zeros(3, device=t.dist.device)
    for group in t.optimizer.param_groups:
        group["lr"] = t.lr * learning_rate_factor(t.step, t.warmup, t.max_steps, t.cosine_decay)
    for micro in range(t.accumulation):
        batch = next(t.batches)
        frames, mel, labels = (batch[k].to(device) for k in ("frames", "mel", "label"))
        if "other_mel" in batch:  # same-clip negatives: one audio pass over both windows of every item
            mel = torch.cat([mel, batch["other_mel"].to(device)])
        # DDP averages gradients over ranks only on the last micro-batch of a step.
        last = micro == t.accumulation - 1 or t.dist.world_size == 1
        with t.ddp_model.no_sync() if not last else contextlib.nullcontext():
            with t.autocast():
                vision, audio = t.ddp_model(frames, mel)
            audio, other_audio = audio[: len(labels)], (audio[len(labels) :] if len(audio) > len(labels) else None)
            loss, scores = t.objective(vision, audio, labels, other_audio)
            (t.scaler.scale(loss / t.accumulation) if t.scaler else loss / t.accumulation).backward()
        totals += _tally(loss.detach(), scores, labels)
    if t.scaler is not None:
        t.scaler.unscale_(t.optimizer)  # clip the true gradients
    torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.max_grad_norm)
    if t.scaler is not None:
        t.scaler.step(t.optimizer)
        t.scaler.update()
    else:
        t.optimizer.step()
    t.optimizer.zero_grad(set_to_none=True)
    return totals


def _tally(loss: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[loss sum, correct predictions, samples] of a batch, for averaging over steps and ranks."""
    correct = ((scores > 0.5) == (labels > 0.5)).sum()
    return torch.stack([loss * len(labels), correct.to(loss.dtype), torch.tensor(float(len(labels)), device=loss.device)])


@torch.no_grad()
def validate(t: SyncNetTraining) -> tuple[float, float]:
    """(loss, accuracy) over the fixed validation samples, each rank scoring its share; the loss is the published
    BCE of the cosine whatever the training objective, so that runs compare."""
    t.model.eval()
    totals = torch.zeros(3, device=t.dist.device)
    for batch in DataLoader(t.val_set, sampler=t.val_ids, **t.loader_args):
        labels = batch["label"].to(t.dist.device)
        with t.autocast():
            vision, audio = t.model(batch["frames"].to(t.dist.device), batch["mel"].to(t.dist.device))
        loss, scores = syncnet_loss(vision, audio, labels)
        totals += _tally(loss, scores, labels)
    t.model.train()
    loss_sum, correct, count = all_reduce_sum(totals).tolist()
    return loss_sum / max(count, 1), correct / max(count, 1)


def _check_config(config: Mapping[str, Any]) -> None:
    """Fail early, with a hint, on a config this trainer cannot use."""
    for section in ("model", "data", "optimizer", "run"):
        if not isinstance(config.get(section), Mapping):
            raise InputError(f"the config lacks its `{section}:` section", "start from configs/syncnet/syncnet_16_pixel_attn.yaml")
    _lr_schedule(config["optimizer"])
    objective(config["run"])
    data = config["data"]
    missing = [f"data.{k}" for k in ("batch_size", "num_frames", "resolution") if k not in data]
    if missing:
        raise InputError(f"the config lacks {', '.join(missing)}", "use the published SyncNet config layout")
    if data.get("latent_space"):
        raise InputError(
            "latent-space SyncNet training (data.latent_space: true) is not supported",
            "use a pixel-space config such as configs/syncnet/syncnet_16_pixel_attn.yaml",
        )
    channels = config["model"].get("visual_encoder", {}).get("in_channels")
    if channels != 3 * int(data["num_frames"]):
        raise InputError(
            f"model.visual_encoder.in_channels is {channels}, but {data['num_frames']} RGB frames give {3 * int(data['num_frames'])}",
            "make data.num_frames and the visual encoder's in_channels agree",
        )
