"""U-Net training, stages 1 and 2 (SPEC 10), driven by the published configs (`configs/unet/stage*.yaml`).

    train_unet("stage2.yaml", {"data.train_data_dir": "clips/", "data.train_output_dir": "runs/s2"})
    latentsync train-unet --config stage2.yaml --data-dir clips/ --output-dir runs/s2   (one process)
    torchrun --nproc_per_node 8 -m latentsync.cli train-unet --config stage2.yaml ...   (DDP, one GPU each)

Every step: encode ground-truth, masked and reference frames with the frozen VAE; add mixed noise at a uniform
timestep; the U-Net predicts the noise (epsilon target). Stage 1 (`run.pixel_space_supervise: false`) trains on
the noise MSE alone. Stage 2 also decodes the one-step clean-latent estimate and adds SyncNet, LPIPS (lower
halves) and TREPA losses, each weighted by the config's `run:` section; as in the published trainer, the MSE
term stays on the predicted noise. Only parameters whose names contain one of `run.trainable_modules` train.

Config sections read: `data:`, `ckpt:`, `run:`, `optimizer:`, `model:` (as published) and an optional `weights:`
section saying where the other models come from (default: the published `checkpoints/` layout through
`latentsync.weights.resolve`, downloaded when missing unless `offline`):

    weights:
      dir: checkpoints        # checkpoint folder for weights.resolve (default: the caches)
      version: "1.5"          # which release's files (default: 1.5 at 256 px, 1.6 at 512 px)
      offline: false
      whisper: path/tiny.pt   # any entry may name a file instead: whisper, vae (a diffusers folder),
      vae: path/sd-vae-ft-mse #   syncnet, vgg16, lpips, videomae
      lpips_stages: [[64, 64], ...]          # test-size models only: VGG stage widths,
      videomae_config: {embed_dim: 1408, ...} #   VideoMAE sizes

Keys this project adds to `run:`: `resume` (continue from the newest checkpoint in the output folder),
`log_steps` (metrics averaged over this many steps, default 10), `mixed_precision_dtype` (auto | bf16 | fp16),
`validation` (default true: a video through the inference pipeline at every checkpoint), `zero_optimizer`
(ZeRO-1 under torchrun: the AdamW state is sharded over the ranks), `device` and `validation_steps`. With held-out
clips (`data.val_fileslist` / `data.val_data_dir`, empty by default) the noise MSE of `data.num_val_samples`
(default 16) fixed held-out windows is logged every `run.validation_steps` (default 2500) as `val_loss`, next to
`val_loss_zero_audio` (the same windows with all-zero audio tokens): a U-Net that uses the audio scores lower
with it.

The run ends at `run.max_train_steps` or after `run.max_train_epochs` passes over the clips, whichever comes
first (-1 or absent: no limit). Empty data paths (as in the packaged configs, which drop the authors' cluster
folders) count as not given: the audio feature cache goes to `<train_output_dir>/cache`.

A new run starts from `ckpt.resume_ckpt_path` ("" = random weights; tensors that do not fit, e.g. the motion
modules a stage-1 U-Net lacks, keep their initialisation) at step 0. Outputs in `data.train_output_dir`:
`config.yaml` (pass it to `latentsync infer --unet-config` with a checkpoint), `checkpoints/checkpoint-<step>.pt`,
`metrics.jsonl`, `metrics.png`, `val_videos/`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from einops import rearrange
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.utils.data import DataLoader

from .. import weights as published
from ..audio import WhisperFeatures
from ..checkpoint import load_state_dict
from ..config import load_config
from ..data import UNetDataset, read_fileslist
from ..errors import CheckpointError, InputError, MissingWeightsError
from ..fileio import atomic_path
from ..models import load_scheduler, load_syncnet, load_unet, load_vae
from ..models.lpips import VGG16_STAGES, load_lpips
from ..models.unet import LatentSyncUNet
from ..models.vae import decode_latents, encode_latents
from ..models.videomae import VideoMAEConfig, load_videomae
from ..packaged import DEMO_AUDIO, DEMO_VIDEO, packaged_file
from ..pipeline.job import DEFAULT_GUIDANCE, DEFAULT_STEPS
from ..pipeline.mask import load_mouth_mask
from .checkpoints import latest_checkpoint, load_training_state, save_checkpoint
from .distributed import all_reduce_sum, barrier, cleanup_distributed, DistInfo, setup_distributed, unwrap_model, wrap_ddp
from .metrics import MetricsLog
from .precision import autocast_and_scaler
from .sampling import seed_everything, TrainSampler
from .settings import apply_overrides, cache_folder, check_plotting, configured_path, run_settings, RunSettings
from .losses import TREPALoss, frame_noise, lpips_loss, predicted_x0, sync_loss

log = logging.getLogger(__name__)

LOSS_TERMS = {"recon_loss": "recon_loss_weight", "sync_loss": "sync_loss_weight",
              "lpips_loss": "perceptual_loss_weight", "trepa_loss": "trepa_loss_weight"}  # fmt: skip
RUN_DEFAULTS = {"seed": 1247, "save_ckpt_steps": 10000}  # the published U-Net values, for configs without them


def train_unet(config_path: str | os.PathLike | Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> Path:
    """Train the U-Net as the config says; returns the output folder. Runs as one process or under torchrun.

    `overrides`: dotted entries replacing the config's, e.g. {"data.train_data_dir": "clips/", "run.resume": True};
    a whole section may be replaced too ({"model": {...}}).
    """
    cfg = load_training_config(config_path, overrides)
    settings = run_settings(cfg, **RUN_DEFAULTS)
    check_plotting()
    dist = setup_distributed((cfg.get("run") or {}).get("device"))
    try:
        return _train(cfg, settings, dist)
    finally:
        cleanup_distributed()


def _train(cfg: dict[str, Any], settings: RunSettings, dist: DistInfo) -> Path:
    """Setup, then the loop: one optimiser step per batch, with logging, held-out losses, checkpoints and
    validation videos at their intervals."""
    t = setup(cfg, settings, dist)
    window = torch.zeros(len(LOSS_TERMS) + 2, device=dist.device)  # sums since the last log line: steps, loss, terms
    for batch in t.loader:
        if t.step >= t.max_steps:
            break
        # ---- one optimiser step ----
        loss, terms, grad_norm = train_step(t, batch)
        t.step += 1

        # ---- metrics: averaged over the steps since the last line, and over the ranks ----
        zero = torch.zeros_like(loss)
        window += torch.stack([zero + 1, loss, *(terms.get(name, zero) for name in LOSS_TERMS)]).detach()
        if t.step % settings.log_steps == 0 or t.step == t.max_steps:
            count, total, *term_sums = all_reduce_sum(window).tolist()
            values = {"train_loss": total / count} | {k: v / count for k, v in zip(LOSS_TERMS, term_sums) if k in terms}
            t.metrics.log(t.step, **values, grad_norm=float(grad_norm), lr=t.optimizer.param_groups[0]["lr"])
            if dist.is_main:
                log.info("step %d/%d: %s", t.step, t.max_steps, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
            window.zero_()

        # ---- held-out noise loss, with the clips' audio and with zero audio tokens ----
        if t.held_out is not None and (t.step % settings.validation_steps == 0 or t.step == t.max_steps):
            values = t.held_out(t.unet, t.autocast)
            t.metrics.log(t.step, **values)
            if dist.is_main:
                log.info("step %d: %s", t.step, ", ".join(f"{k} {v:.4g}" for k, v in values.items()))

        # ---- checkpoint and validation video ----
        if t.step % settings.save_ckpt_steps == 0 or t.step == t.max_steps:
            if isinstance(t.optimizer, ZeroRedundancyOptimizer):
                t.optimizer.consolidate_state_dict(to=0)  # every rank takes part; rank 0 writes the whole state
            save_checkpoint(t.output_dir, t.step, t.unet, t.optimizer, t.scaler)
            t.metrics.plot()
            if t.validate is not None:
                t.validate(t.unet, t.step, is_main=dist.is_main)
    return t.output_dir


@dataclass
class Critics:
    """The frozen stage-2 models whose loss weight is not 0 (None otherwise), and how the SyncNet sees frames."""

    syncnet: torch.nn.Module | None = None
    lpips: torch.nn.Module | None = None
    trepa: TREPALoss | None = None
    sync_options: dict[str, Any] = field(default_factory=dict)

    @property
    def pixel_space(self) -> bool:
        """Stage 2: some loss needs the decoded clean-latent estimate."""
        return any(m is not None for m in (self.syncnet, self.lpips, self.trepa))


@dataclass
class Diffusion:
    """The frozen parts of the noise objective: VAE, scheduler, the mask in latent space and the noise mix."""

    vae: torch.nn.Module
    scheduler: Any
    alphas_cumprod: torch.Tensor
    mask_latent: torch.Tensor  # (1, 1, 1, h, w)
    noise_alpha: float | None  # None: one frame's noise repeated (mixed noise off)

    def noisy_inputs(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator, device: torch.device):
        """(U-Net input, noise, noisy latents, timesteps, ground-truth latents) of a batch; noise and timesteps
        drawn from `generator`."""
        with torch.no_grad():
            latents = frames_to_latents(self.vae, batch["frames"].to(device))
            masked_latents = frames_to_latents(self.vae, batch["masked_frames"].to(device))
            ref_latents = frames_to_latents(self.vae, batch["ref_frames"].to(device))
        b, _, f, h, w = latents.shape
        condition = torch.cat([self.mask_latent.expand(b, 1, f, h, w), masked_latents, ref_latents], dim=1)
        timesteps = torch.randint(0, len(self.alphas_cumprod), (b,), device=device, generator=generator)
        noise = frame_noise(latents, self.noise_alpha, generator)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        return torch.cat([noisy, condition], dim=1), noise, noisy, timesteps


@dataclass
class UNetTraining:
    """Everything the loop works with, built by `setup`; `step` counts the optimiser steps done."""

    settings: RunSettings
    dist: DistInfo
    output_dir: Path
    unet: LatentSyncUNet
    model: torch.nn.Module  # the U-Net, under DDP when several processes train
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    autocast: Callable[[], Any]
    lr: float
    warmup: int
    max_grad_norm: float
    diffusion: Diffusion
    critics: Critics
    loss_weights: dict[str, float]
    loader: DataLoader
    max_steps: int
    metrics: MetricsLog
    validate: Validator | None
    held_out: HeldOutLoss | None
    step: int


def train_step(t: UNetTraining, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """One optimiser step on `batch`: (weighted loss, its terms, gradient norm before clipping)."""
    terms = step_losses(t, batch)
    loss = sum(t.loss_weights[name] * value for name, value in terms.items())
    for group in t.optimizer.param_groups:  # linear warm-up, then constant (the published schedule)
        group["lr"] = t.lr * min(1.0, (t.step + 1) / t.warmup)
    t.optimizer.zero_grad(set_to_none=True)
    if t.scaler is not None:
        t.scaler.scale(loss).backward()
        t.scaler.unscale_(t.optimizer)  # clip the true gradients
    else:
        loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(t.trainable, t.max_grad_norm)
    if t.scaler is not None:
        t.scaler.step(t.optimizer)  # skipped when the fp16 gradients overflowed
        t.scaler.update()
    else:
        t.optimizer.step()
    return loss, terms, grad_norm


def step_losses(t: UNetTraining, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The unweighted loss terms of a batch: the noise MSE, and in stage 2 the pixel-space terms."""
    device, diffusion, critics = t.dist.device, t.diffusion, t.critics
    # Noise and timesteps depend only on (seed, rank, step): a resumed run draws what an uninterrupted one would.
    generator = torch.Generator(device).manual_seed(step_seed(t.settings.seed, t.dist.rank, t.step))
    inputs, noise, noisy, timesteps = diffusion.noisy_inputs(batch, generator, device)
    with t.autocast():
        noise_pred = t.model(inputs, timesteps, batch["audio_windows"].to(device))
    terms = {"recon_loss": F.mse_loss(noise_pred.float(), noise)}
    if critics.pixel_space:
        frames = batch["frames"].to(device)
        clean = predicted_x0(noisy, noise_pred, diffusion.alphas_cumprod[timesteps])
        decoded = decode_latents(diffusion.vae, rearrange(clean, "b c f h w -> (b f) c h w")).float()
        decoded = rearrange(decoded, "(b f) c h w -> b f c h w", b=frames.shape[0])
        if critics.syncnet is not None:
            terms["sync_loss"] = sync_loss(critics.syncnet, decoded, batch["mel"].to(device), **critics.sync_options)
        if critics.lpips is not None:
            terms["lpips_loss"] = lpips_loss(critics.lpips, decoded, frames)
        if critics.trepa is not None:
            terms["trepa_loss"] = critics.trepa(decoded, frames)
    return terms


# ---- setup, in the order it runs ----


def setup(cfg: dict[str, Any], settings: RunSettings, dist: DistInfo) -> UNetTraining:
    """Locate every input (fetching missing weights) before building any model, so that mistakes fail in seconds;
    then the U-Net and its optimiser (resumed when asked), the frozen models and the data."""
    data, ckpt, run, opt = (cfg.get(name) or {} for name in ("data", "ckpt", "run", "optimizer"))
    device, seed = dist.device, settings.seed
    resolution = int(data["resolution"])
    output_dir = Path(data["train_output_dir"]).expanduser()
    files = WeightFiles(cfg.get("weights") or {}, resolution)
    autocast, scaler = autocast_and_scaler(
        device, bool(run.get("mixed_precision_training", False)), run.get("mixed_precision_dtype", "auto")
    )
    frozen_dtype = getattr(autocast(), "fast_dtype", torch.float32)  # frozen models are stored in the autocast dtype
    loss_weights = stage_loss_weights(run)

    # ---- inputs: weights, clips, cache ----
    resume = latest_checkpoint(output_dir) if run.get("resume", False) else None
    init = (ckpt.get("resume_ckpt_path") or None) if resume is None else None  # "" means random weights
    syncnet_config = syncnet_config_for(data) if loss_weights["sync_loss"] else None
    paths = _locate_weights(files, init, syncnet_config, loss_weights, dist)
    clips = read_fileslist(configured_path(data, "train_fileslist"), configured_path(data, "train_data_dir"))
    val_fileslist, val_data_dir = configured_path(data, "val_fileslist"), configured_path(data, "val_data_dir")
    val_clips = read_fileslist(val_fileslist, val_data_dir, purpose="validation") if val_fileslist or val_data_dir else None
    cache_dir = cache_folder(data, "audio_embeds_cache_dir", output_dir)

    # ---- the U-Net and its optimiser: resumed from the output folder, or started from the configured weights ----
    seed_everything(seed)  # the same initial weights on every rank
    unet = load_unet(cfg["model"], device=device).train()
    if "unet" in paths:
        load_initial_weights(unet, paths["unet"])
    trainable = select_trainable(unet, run.get("trainable_modules"))
    checkpointing = bool(run.get("enable_gradient_checkpointing", False))
    if checkpointing:
        unet.enable_gradient_checkpointing()
    lr = settings.lr * (dist.world_size if opt.get("scale_lr", False) else 1)
    optimizer = _optimizer(trainable, lr, opt, zero=bool(run.get("zero_optimizer", False)) and dist.world_size > 1)
    step = load_training_state(resume, unet, optimizer, scaler) if resume is not None else 0
    if dist.is_main:
        count = sum(p.numel() for p in trainable) / 1e6, sum(p.numel() for p in unet.parameters()) / 1e6
        start = f"resuming {resume}" if resume else f"starting from {init or 'random weights'}"
        log.info("U-Net: %.1f M of %.1f M parameters trainable; %s", *count, start)

    # ---- frozen models: VAE, Whisper, and the stage-2 critics whose loss weight is not 0 ----
    vae = load_vae(paths["vae"], device=device, dtype=frozen_dtype, offline=files.offline)
    whisper = WhisperFeatures(paths["whisper"], device="cpu")  # runs in the DataLoader workers; results are cached
    if whisper.width != unet.config.cross_attention_dim:
        raise InputError(
            f"Whisper features are {whisper.width} wide, the U-Net attends to {unet.config.cross_attention_dim}",
            "use the Whisper checkpoint that matches model.cross_attention_dim",
        )
    critics = _critics(paths, files, syncnet_config, device, frozen_dtype)
    if checkpointing:  # the pixel losses back-propagate through these frozen models too
        for model in (vae, critics.syncnet, critics.trepa.videomae if critics.trepa else None):
            if model is not None:
                model.enable_gradient_checkpointing()
    mask = load_training_mask(data.get("mask_image_path"), resolution)
    latent_size = (resolution // 8, resolution // 8)
    mask_latent = F.interpolate(torch.from_numpy(mask).to(device)[None, None], size=latent_size, mode="nearest")
    scheduler = load_scheduler()
    noise_alpha = float(run.get("mixed_noise_alpha", 1.0)) if run.get("use_mixed_noise", True) else None
    diffusion = Diffusion(vae, scheduler, scheduler.alphas_cumprod.to(device), mask_latent[:, :, None], noise_alpha)

    # ---- data: an endless, resumable sample order; held-out windows for the validation loss ----
    loader, held_out = _data(data, clips, val_clips, whisper, mask, cache_dir, diffusion, seed, step, dist)
    if dist.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(output_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    validate = Validator(cfg, seed, files, vae, whisper, mask, output_dir, autocast) if run.get("validation", True) else None
    return UNetTraining(
        settings=settings, dist=dist, output_dir=output_dir, unet=unet, model=wrap_ddp(unet, dist),
        trainable=trainable, optimizer=optimizer, scaler=scaler, autocast=autocast, lr=lr,
        warmup=max(1, int(opt.get("lr_warmup_steps", 0))), max_grad_norm=float(opt.get("max_grad_norm", 1.0)),
        diffusion=diffusion, critics=critics, loss_weights=loss_weights, loader=loader,
        max_steps=settings.total_steps(len(clips), int(data.get("batch_size", 1)) * dist.world_size),
        metrics=MetricsLog(output_dir, start_step=step), validate=validate, held_out=held_out, step=step,
    )  # fmt: skip


def _data(
    data: Mapping[str, Any], clips: list[Path], val_clips: list[Path] | None, whisper: WhisperFeatures,
    mask: np.ndarray, cache_dir: Path, diffusion: Diffusion, seed: int, step: int, dist: DistInfo,
) -> tuple[DataLoader, HeldOutLoss | None]:
    """The training batches from `step` on, and the held-out loss when there are held-out clips."""
    resolution, num_frames = int(data["resolution"]), int(data.get("num_frames", 16))
    batch_size = int(data.get("batch_size", 1))
    items = dict(mask=mask, cache_dir=cache_dir, frames_in_memory=bool(data.get("frames_in_memory", False)))
    dataset = UNetDataset(clips, whisper, resolution, num_frames, seed=seed, **items)
    sampler = TrainSampler(len(dataset), batch_size, seed, dist, start_step=step)
    workers = int(data.get("num_workers", 0))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                        pin_memory=dist.device.type == "cuda", persistent_workers=workers > 0)  # fmt: skip
    if val_clips is None:
        return loader, None
    val_set = UNetDataset(val_clips, whisper, resolution, num_frames, seed=seed + 1, **items)
    return loader, HeldOutLoss(val_set, int(data.get("num_val_samples", 16)), batch_size, diffusion, seed, dist)


def _locate_weights(
    files: WeightFiles, init: str | None, syncnet_config: Mapping[str, Any] | None, loss_weights: Mapping[str, float],
    dist: DistInfo,
) -> dict[str, Path]:
    """Paths of every model the run needs; rank 0 fetches missing weights first, the others then find them."""
    wanted = {"vae": None, "whisper": None} | ({"unet": init} if init else {})
    if syncnet_config is not None:
        wanted["syncnet"] = (syncnet_config.get("ckpt") or {}).get("inference_ckpt_path")
    if loss_weights["lpips_loss"]:
        wanted |= {"vgg16": None, "lpips": None}
    if loss_weights["trepa_loss"]:
        wanted["videomae"] = None
    if not dist.is_main:
        barrier()
    paths = files.locate(wanted)
    if dist.is_main:
        barrier()
    return paths


def _optimizer(trainable: list[torch.nn.Parameter], lr: float, opt: Mapping[str, Any], zero: bool) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; with `zero` (ZeRO-1 under torchrun) each rank keeps the AdamW state
    of its share of the parameters only (stage 1 trains all 1.27 B)."""
    if opt.get("lr_scheduler", "constant") not in ("constant", "constant_with_warmup"):
        raise InputError(f"optimizer.lr_scheduler {opt['lr_scheduler']!r} is not supported",
                         'use "constant" (with optimizer.lr_warmup_steps for a linear warm-up)')  # fmt: skip
    if zero:
        return ZeroRedundancyOptimizer(trainable, optimizer_class=torch.optim.AdamW, lr=lr)
    return torch.optim.AdamW(trainable, lr=lr)


def _critics(
    paths: Mapping[str, Path], files: WeightFiles, syncnet_config: Mapping[str, Any] | None, device: torch.device,
    dtype: torch.dtype,
) -> Critics:
    """The stage-2 frozen models that were located (LPIPS stays in float32, as published)."""
    critics = Critics()
    if "syncnet" in paths:
        critics.syncnet = load_syncnet(syncnet_config, paths["syncnet"], device=device, dtype=dtype)
        syncnet_data = syncnet_config.get("data") or {}
        critics.sync_options = dict(resolution=syncnet_data.get("resolution"),
                                    use_lower_half=syncnet_data.get("lower_half", True))  # fmt: skip
    if "lpips" in paths:
        critics.lpips = load_lpips(paths["vgg16"], paths["lpips"], files.lpips_stages, device=device)
    if "videomae" in paths:
        critics.trepa = TREPALoss(load_videomae(paths["videomae"], files.videomae_config, device=device, dtype=dtype))
    return critics


class HeldOutLoss:
    """The noise MSE on fixed held-out windows (`data.val_fileslist` / `val_data_dir`), with the windows' own audio
    ("val_loss") and with all-zero audio tokens ("val_loss_zero_audio", the unconditional input of guidance).

    Windows, noise and timesteps are the same at every evaluation, so the values compare across steps; a U-Net
    that uses the audio scores lower with it than without it. Each rank scores its share of the windows.
    """

    def __init__(self, dataset: UNetDataset, count: int, batch_size: int, diffusion: Diffusion, seed: int, dist: DistInfo):
        self.dataset, self.diffusion, self.seed, self.dist = dataset, diffusion, seed, dist
        self.ids = list(range(dist.rank, count, dist.world_size))
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, unet: LatentSyncUNet, autocast: Callable[[], Any]) -> dict[str, float]:
        device = self.dist.device
        unet.eval()
        totals = torch.zeros(3, device=device)  # squared-error sums with audio, without, and the sample count
        for index, batch in enumerate(DataLoader(self.dataset, self.batch_size, sampler=self.ids)):
            generator = torch.Generator(device).manual_seed(step_seed(self.seed + 1, self.dist.rank, index))
            inputs, noise, _, timesteps = self.diffusion.noisy_inputs(batch, generator, device)
            audio = batch["audio_windows"].to(device)
            for slot, tokens in enumerate((audio, torch.zeros_like(audio))):
                with autocast():
                    prediction = unet(inputs, timesteps, tokens).float()
                totals[slot] += ((prediction - noise) ** 2).mean(dim=(1, 2, 3, 4)).sum()
            totals[2] += len(noise)
        unet.train()
        with_audio, zero_audio, count = all_reduce_sum(totals).tolist()
        return {"val_loss": with_audio / max(count, 1), "val_loss_zero_audio": zero_audio / max(count, 1)}


# ---- helpers ----


def stage_loss_weights(run: Mapping[str, Any]) -> dict[str, float]:
    """Weight of each loss term from the `run:` section; the pixel-space terms are 0 unless
    `pixel_space_supervise` (stage 2), the SyncNet term also unless `use_syncnet`."""
    # Without an entry: the noise MSE counts fully (the published 1), the pixel-space terms not at all.
    weights = {term: float(run.get(key, 1.0 if term == "recon_loss" else 0.0)) for term, key in LOSS_TERMS.items()}
    pixel_space = bool(run.get("pixel_space_supervise", False))
    if run.get("use_syncnet", False) and not pixel_space:
        raise InputError("run.use_syncnet needs run.pixel_space_supervise", "the latent-space SyncNet is not supported")
    if not (pixel_space and run.get("use_syncnet", False)):
        weights["sync_loss"] = 0.0
    if not pixel_space:
        weights["lpips_loss"] = weights["trepa_loss"] = 0.0
    return weights


def load_training_config(
    source: str | os.PathLike | Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The config as a dict with dotted `overrides` applied (see `common.apply_overrides`), checked."""
    cfg = _plain(apply_overrides(load_config(source), overrides))
    hint = "start from latentsync/configs/unet/stage*.yaml"
    for section in ("data", "model"):
        if not isinstance(cfg.get(section), Mapping):
            raise InputError(f"the training config has no `{section}:` section", hint)
    for key in ("resolution", "train_output_dir"):
        if key not in cfg["data"]:
            raise InputError(f"the training config lacks data.{key}", hint)
    return cfg


def _plain(value: Any) -> Any:
    """The config with paths as strings, so that it can be written back as YAML."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return os.fspath(value) if isinstance(value, os.PathLike) else value


class WeightFiles:
    """Where each model's weights come from: a path in the config's `weights:` section, else the published layout."""

    def __init__(self, section: Mapping[str, Any], resolution: int):
        self.section = section
        self.dir = section.get("dir")
        self.version = str(section.get("version") or ("1.6" if resolution >= 512 else "1.5"))
        self.offline = bool(section.get("offline", False))
        self.lpips_stages = [list(s) for s in section.get("lpips_stages", VGG16_STAGES)]
        self.videomae_config = VideoMAEConfig(**section.get("videomae_config", {}))

    def locate(self, wanted: Mapping[str, str | os.PathLike | None]) -> dict[str, Path]:
        """Paths of the wanted components ({component: the path the config gives elsewhere, or None}).

        The `weights:` entry, else the given path, is used as is when it exists. The others come from the published
        layout through `latentsync.weights.resolve`, in one call, so that every missing file is named in one error;
        a configured path that does not exist must name the published file (e.g. checkpoints/latentsync_unet.pt).
        """
        found, published_components = {}, []
        for component, given in wanted.items():
            given = self.section.get(component) or given
            path = Path(given).expanduser() if given else None
            if path is not None and path.exists():
                found[component] = path
            elif path is not None and not path.as_posix().endswith(_local_name(component)):
                raise MissingWeightsError(f"{component} weights not found: {path}", "fix the path in the config")
            else:
                published_components.append(component)
        if published_components:
            files = published.resolve(published_components, self.version, self.dir, self.offline)
            found.update({c: files[c] for c in published_components})
        return found


def _local_name(component: str) -> str:
    """A component's path in the published layout (the VAE: its folder)."""
    return published.VAE_FOLDER if component == "vae" else published.COMPONENTS[component][0].local


def load_initial_weights(unet: LatentSyncUNet, path: Path) -> None:
    """Copy every tensor of `path` that fits the U-Net by name and shape; the others keep their initialisation.

    As published (non-strict): a stage-1 checkpoint has no motion modules for stage 2, and a published 1.5/1.6
    U-Net has motion modules a stage-1 config does not build.
    """
    state = load_state_dict(path)
    own = unet.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fitting:
        raise CheckpointError(f"no tensor of {path} fits the U-Net", "check that it is a LatentSync U-Net checkpoint")
    unet.load_state_dict(fitting, strict=False)
    kept, ignored = len(own) - len(fitting), len(state) - len(fitting)
    log.info("initial weights %s: %d tensors loaded, %d keep their initialisation, %d ignored",
             path, len(fitting), kept, ignored)


def select_trainable(unet: torch.nn.Module, patterns: list[str] | None) -> list[torch.nn.Parameter]:
    """Freeze every parameter whose name contains none of `patterns` (None: train everything); the trainable ones."""
    for name, param in unet.named_parameters():
        param.requires_grad_(patterns is None or any(p in name for p in patterns))
    trainable = [p for p in unet.parameters() if p.requires_grad]
    if not trainable:
        raise InputError(f"run.trainable_modules {patterns} matches no U-Net parameter",
                         'e.g. ["motion_modules.", "attentions."]')
    return trainable


def packaged_or_path(path: str | os.PathLike) -> Path | None:
    """`path` if it exists, else the same relative path inside the package (the published configs name
    `configs/...` relative to the repository), else None."""
    if Path(path).expanduser().exists():
        return Path(path).expanduser()
    inside = packaged_file(path)
    return inside if inside.exists() else None


def syncnet_config_for(data: Mapping[str, Any]) -> dict[str, Any]:
    """The SyncNet config named by `data.syncnet_config_path` (published configs name it relative to the repository,
    i.e. inside this package). Its `data:` gives the SyncNet's resolution and lower_half, its `ckpt:` the weights."""
    given = data.get("syncnet_config_path", "configs/syncnet/syncnet_16_pixel_attn.yaml")
    config_path = packaged_or_path(given)
    if config_path is None:
        raise InputError(f"SyncNet config not found: {given}", "set data.syncnet_config_path")
    return load_config(config_path)


def load_training_mask(path: str | None, resolution: int) -> np.ndarray:
    """The mouth mask at `resolution`: the configured image, or the packaged (published) one when it is missing."""
    if path and Path(path).expanduser().is_file():
        return load_mouth_mask(resolution, str(Path(path).expanduser()))
    if path:
        log.warning("mask image %s not found; using the packaged mask (the published mask.png)", path)
    return load_mouth_mask(resolution)


def frames_to_latents(vae: torch.nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """(B, F, 3, R, R) in [-1, 1] -> scaled latents (B, 4, F, R/8, R/8) in float32 (posterior mean, as at inference)."""
    latents = encode_latents(vae, frames.flatten(0, 1)).float()
    return rearrange(latents, "(b f) c h w -> b c f h w", b=frames.shape[0])


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


class Validator:
    """Lip-syncs the validation clip with the current U-Net through the inference pipeline (main process only)."""

    def __init__(
        self, cfg: Mapping[str, Any], seed: int, files: WeightFiles, vae, whisper, mask: np.ndarray, output_dir: Path,
        autocast,
    ):
        data, run = cfg["data"], cfg.get("run") or {}
        self.video = self._clip(data.get("val_video_path"), DEMO_VIDEO)
        self.audio = self._clip(data.get("val_audio_path"), DEMO_AUDIO)
        self.files, self.vae, self.whisper, self.mask, self.autocast = files, vae, whisper, mask, autocast
        self.resolution = int(data["resolution"])
        self.steps, self.guidance = int(run.get("inference_steps", DEFAULT_STEPS)), float(run.get("guidance_scale", DEFAULT_GUIDANCE))
        self.seed = seed
        self.folder = output_dir / "val_videos"
        self.detector = None  # built at the first validation

    @staticmethod
    def _clip(path: str | None, demo: str) -> Path:
        """The configured validation file, else the packaged demo (with a warning when a path was configured)."""
        found = packaged_or_path(path) if path else None
        if found is not None:
            return found
        packaged = packaged_or_path(demo)
        if packaged is None:
            raise InputError(f"the packaged validation demo {demo} is missing from this installation",
                             "set data.val_video_path and data.val_audio_path, or run.validation: false")
        if path:
            log.warning("validation file %s not found; validating on the packaged demo %s", path, packaged.name)
        return packaged

    def __call__(self, unet: LatentSyncUNet, step: int, is_main: bool) -> None:
        """Write `val_videos/val_video_<step>.mp4`; a failure is logged, never ends the training run."""
        if is_main:
            output = self.folder / f"val_video_{step}.mp4"
            try:
                with torch.no_grad(), self.autocast():
                    self._pipeline(unet)(self.video, self.audio, output, num_inference_steps=self.steps,
                                         guidance_scale=self.guidance, seed=self.seed, progress=False)
                log.info("validation video: %s", output)
            except Exception:  # noqa: BLE001  (a broken validation must not cost the training run)
                log.exception("validation at step %d failed; training goes on", step)
            finally:
                unet.train()  # the pipeline switches the U-Net to eval mode
        barrier()

    def _pipeline(self, unet: LatentSyncUNet):
        from ..face import create_detector  # only validation needs faces and the video pipeline
        from ..pipeline import LipSyncPipeline

        if self.detector is None:
            self.detector = create_detector("auto", checkpoint_dir=self.files.dir, offline=True)
        return LipSyncPipeline(unet=unwrap_model(unet), vae=self.vae, scheduler=load_scheduler(),
                               resolution=self.resolution, mask=self.mask, audio_encoder=self.whisper,
                               face_detector=self.detector)
