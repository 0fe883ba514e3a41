"""Does StableSyncNet training learn sync, and how fast? Held-out accuracy against steps and minutes.

Trains the published StableSyncNet shape (`syncnet_16_pixel_attn.yaml`: the same blocks, attention and
downsampling, with every width divided by `--width-divisor`, at least 32; at a resolution under 256 the last
downsampling steps become 1 so that the maps still end at 1 x 1) on synthetic clips from
`latentsync.testing.make_sync_clips` (mouth height and width follow the speech's loudness and pitch), through the
trainer's own setup, step and validation. Each setting is one run from the same seed and data; the validation
accuracy on held-out clips is printed every `--eval-every` steps with the training minutes so far (validation
time excluded), split into in-sync and off-sync pairs with their mean scores and the mean score of frames
paired with another clip's mel (`score_split`: where the errors are), and everything is written as JSON.

    python scripts/bench_train_syncnet.py --resolution 64 --steps 300 --json bench_syncnet.json
    python scripts/bench_train_syncnet.py --settings published contrastive+warmup --lr 3e-4
    python scripts/bench_train_syncnet.py --settings scaled+contrastive+warmup scaled+same-clip+warmup \
        --resolution 32 --steps 300 --lr 1e-3 --eval-every 50 --val-samples 128 --threads 1

(the second line gives the README's lr 1e-3 table: logit scale, same-clip negatives, cosine lr schedule).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from latentsync.config import load_config
from latentsync.models.syncnet import StableSyncNet
from latentsync.testing import make_sync_clips
from latentsync.testing.synthetic import SEGMENT_FRAMES
from latentsync.training.distributed import setup_distributed
from latentsync.training.settings import apply_overrides, run_settings
from latentsync.training.losses import syncnet_loss
from latentsync.training.syncnet import setup, train_step

PUBLISHED = Path(__file__).resolve().parent.parent / "latentsync" / "configs" / "syncnet" / "syncnet_16_pixel_attn.yaml"
# What each setting adds to the published training recipe (run at the same lr and batch).
SETTINGS = {
    "published": {},
    "warmup": {"optimizer.lr_warmup_steps": 50},
    "contrastive": {"run.contrastive_loss_weight": 1.0},
    "contrastive+warmup": {"run.contrastive_loss_weight": 1.0, "optimizer.lr_warmup_steps": 50},
    "same-clip+warmup": {"run.contrastive_loss_weight": 1.0, "run.contrastive_same_clip_negatives": True,
                         "optimizer.lr_warmup_steps": 50},
    "scaled+contrastive+warmup": {"run.sync_logit_scale": 10.0, "run.contrastive_loss_weight": 1.0,
                                  "optimizer.lr_warmup_steps": 50},
    "scaled+same-clip+warmup": {"run.sync_logit_scale": 10.0, "run.contrastive_loss_weight": 1.0,
                                "run.contrastive_same_clip_negatives": True, "optimizer.lr_warmup_steps": 50},
    "scaled+warmup": {"run.sync_logit_scale": 10.0, "optimizer.lr_warmup_steps": 50},
    "scaled+same-clip+warmup+cosine": {"run.sync_logit_scale": 10.0, "run.contrastive_loss_weight": 1.0,
                                       "run.contrastive_same_clip_negatives": True, "optimizer.lr_warmup_steps": 50,
                                       "optimizer.lr_schedule": "cosine"},
    "scaled+contrastive+warmup+cosine": {"run.sync_logit_scale": 10.0, "run.contrastive_loss_weight": 1.0,
                                         "optimizer.lr_warmup_steps": 50, "optimizer.lr_schedule": "cosine"},
}


def reduced_model(resolution: int, divisor: int, lower_half: bool = True) -> dict:
    """The published SyncNet `model:` section with widths / divisor (at least 32), for `resolution`.

    Below 256 px the visual maps reach 1 x 1 earlier: the blocks after that one are left out (kept, they would
    run GroupNorm on 1 x 1 maps of few channels per group, which the published widths never do). The last block
    of each encoder keeps at least 256 channels, 8 per group of the final GroupNorm: with 2 per group the
    embedding becomes a binary code whose gradient vanishes.
    """
    model = copy.deepcopy(load_config(PUBLISHED)["model"])
    height = resolution // 2 if lower_half else resolution
    visual = model["visual_encoder"]
    blocks = len(visual["downsample_factors"])
    while blocks > 1 and _visual_map(visual, blocks - 1, height, resolution) == (1, 1):
        blocks -= 1
    for key in ("block_out_channels", "downsample_factors", "attn_blocks"):
        visual[key] = visual[key][:blocks]
    for encoder in model.values():
        widths = [max(32, w // divisor) for w in encoder["block_out_channels"]]
        encoder["block_out_channels"] = widths[:-1] + [max(256, widths[-1])]
    if _visual_map(visual, blocks, height, resolution) != (1, 1):
        raise SystemExit(f"the published visual encoder does not reach 1 x 1 at {resolution} px")
    return model


def _visual_map(visual: dict, blocks: int, height: int, width: int) -> tuple[int, int]:
    """The map size after the first `blocks` downsamplings of the visual encoder."""
    size = torch.zeros(1, 1, height, width)
    for factor in visual["downsample_factors"][:blocks]:
        fy, fx = factor if isinstance(factor, list) else (factor, factor)
        if (fy, fx) != (1, 1):
            size = torch.nn.functional.max_pool2d(size, (fy, fx), ceil_mode=True)
    return tuple(size.shape[2:])


@torch.no_grad()
def score_split(t) -> dict:
    """One pass over the held-out samples: the trainer's validation figures (the published BCE of the cosine, and
    the accuracy at 0.5), then where the errors are: accuracy and mean score of the in-sync and the off-sync pairs;
    the AUC (the share of (in-sync, off-sync) pairs ranked right: how well the scores order them, whatever the 0.5
    decision); and the mean score of each item's frames with the mel of its neighbour in the batch, another clip
    (the validation ids cycle over the clips). A model that told clips apart would score those below the same
    clip's off-sync pairs."""
    t.model.eval()
    visions, audios, targets, cross = [], [], [], []
    for batch in DataLoader(t.val_set, sampler=t.val_ids, batch_size=64):
        vision, audio = t.model(batch["frames"], batch["mel"])
        visions.append(vision)
        audios.append(audio)
        targets.append(batch["label"])
        cross.append((vision * audio.roll(1, 0)).sum(1))
    t.model.train()
    targets, cross = torch.cat(targets), torch.cat(cross)
    loss, scores = syncnet_loss(torch.cat(visions), torch.cat(audios), targets)
    labels = targets > 0.5
    return {"val_loss": loss.item(),
            "val_acc": ((scores > 0.5) == labels).float().mean().item(),
            "in_sync_acc": (scores[labels] > 0.5).float().mean().item(),
            "off_sync_acc": (scores[~labels] <= 0.5).float().mean().item(),
            "in_sync_score": scores[labels].mean().item(), "off_sync_score": scores[~labels].mean().item(),
            "auc": (scores[labels][:, None] > scores[~labels][None, :]).float().mean().item(),
            "other_clip_score": cross.mean().item()}  # fmt: skip


def run(name: str, overrides: dict, base: dict, eval_every: int) -> dict:
    config = apply_overrides(base, {**overrides, "data.train_output_dir": str(Path(base["data"]["train_output_dir"]) / name)})
    settings = run_settings(config, seed=42, save_ckpt_steps=10**9)
    t = setup(config, settings, setup_distributed("cpu"))
    curve, seconds = [], 0.0
    accuracy = score_split(t)["val_acc"]
    curve.append({"step": 0, "minutes": 0.0, "val_acc": accuracy})
    print(f"{name:>20}  step    0  {0:6.2f} min  val acc {accuracy:.3f}", flush=True)
    while t.step < t.max_steps:
        started = time.perf_counter()
        totals = train_step(t)
        seconds += time.perf_counter() - started
        t.step += 1
        if t.step % eval_every == 0:
            split = score_split(t)
            loss, accuracy = split["val_loss"], split["val_acc"]
            curve.append({"step": t.step, "minutes": seconds / 60, "train_loss": float(totals[0] / totals[2]), **split})
            print(f"{name:>20}  step {t.step:4d}  {seconds / 60:6.2f} min  val acc {accuracy:.3f} (in sync "
                  f"{split['in_sync_acc']:.2f}, off sync {split['off_sync_acc']:.2f}, AUC {split['auc']:.2f})  "
                  f"mean score in sync {split['in_sync_score']:.2f}, off sync {split['off_sync_score']:.2f}, "
                  f"other clip {split['other_clip_score']:.2f}  val loss {loss:.3f}  "
                  f"train loss {curve[-1]['train_loss']:.3f}", flush=True)
    reached = next((p for p in curve if p["val_acc"] >= 0.9), None)
    return {"setting": name, "overrides": overrides, "curve": curve, "reached_0.9": reached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--resolution", type=int, default=64, help="clip side (256 as published; CPU: 64)")
    parser.add_argument("--width-divisor", type=int, default=8, help="published widths / this (at least 32)")
    parser.add_argument("--clips", type=int, default=12, help="training clips (4 more are held out)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--segment-frames", type=int, nargs=2, default=SEGMENT_FRAMES, metavar=("SHORTEST", "LONGEST"),
                        help="length range of one sound or pause in frames (2 8: syllable-long, a harder set)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--val-samples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the curves here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        segments = tuple(args.segment_frames)
        make_sync_clips(root / "train", args.clips, args.seconds, args.resolution, seed=0, segment_frames=segments)
        make_sync_clips(root / "val", 4, args.seconds, args.resolution, seed=1, segment_frames=segments)
        base = apply_overrides(load_config(PUBLISHED), {
            "model": reduced_model(args.resolution, args.width_divisor),
            "data.train_fileslist": str(root / "train" / "fileslist.txt"),
            "data.val_fileslist": str(root / "val" / "fileslist.txt"), "data.train_output_dir": str(root / "runs"),
            "data.audio_mel_cache_dir": str(root / "cache"), "data.resolution": args.resolution,
            "data.batch_size": args.batch_size, "data.num_workers": 0, "data.num_val_samples": args.val_samples,
            "data.frames_in_memory": True, "optimizer.lr": args.lr, "run.max_train_steps": args.steps,
            "run.mixed_precision_training": False,
        })  # fmt: skip
        parameters = sum(p.numel() for p in StableSyncNet(**base["model"]).parameters()) / 1e6
        print(f"StableSyncNet {parameters:.2f} M parameters, {args.resolution} px, batch {args.batch_size}, lr {args.lr}")
        results = [run(name, SETTINGS[name], base, args.eval_every) for name in args.settings]

    print("\nfirst validation at >= 0.9 accuracy:")
    for result in results:
        point = result["reached_0.9"]
        print(f"  {result['setting']:>20}: " + (f"step {point['step']}, {point['minutes']:.1f} min" if point else "not reached"))
    if args.json:
        report = {"resolution": args.resolution, "width_divisor": args.width_divisor, "batch_size": args.batch_size,
                  "lr": args.lr, "segment_frames": list(args.segment_frames), "parameters_m": parameters, "model": base["model"], "runs": results}  # fmt: skip
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
