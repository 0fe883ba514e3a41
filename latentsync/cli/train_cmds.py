"""`latentsync train-syncnet` and `latentsync train-unet`.

The trainers read a published YAML config; command-line options become dotted overrides of it
(`--max-steps 100` -> {"run.max_train_steps": 100}), and `--set section.key=value` reaches any other entry.
Run them under `torchrun --nproc_per_node N -m latentsync.cli ...` (or `python -m torch.distributed.run`) for
several devices.
"""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from ..errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    for name, helptext in (
        ("train-syncnet", "train StableSyncNet from a published SyncNet config"),
        ("train-unet", "train or fine-tune the U-Net from a published U-Net config"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--config", required=True, help="published YAML config (configs/syncnet/*.yaml, configs/unet/*.yaml)")
        p.add_argument("--output-dir", help="checkpoints, metrics.jsonl and metrics.png go here (data.train_output_dir)")
        p.add_argument("--data-dir", help="folder of prepared clips (replaces the config's training data)")
        p.add_argument("--fileslist", help="text file of clip paths (replaces the config's training data)")
        p.add_argument("--cache-dir", help="folder for the audio feature caches")
        p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (run.max_train_steps)")
        p.add_argument("--batch-size", type=int, help="samples per step and process (data.batch_size)")
        p.add_argument("--lr", type=float, help="learning rate (optimizer.lr)")
        p.add_argument("--num-workers", type=int, help="DataLoader workers per process (data.num_workers)")
        p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
        p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in the output folder")
        p.add_argument(
            "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
            help="override any config entry, e.g. --set run.validation_steps=500 (repeatable; YAML values)",
        )
        p.add_argument("--val-data-dir", help="folder of held-out clips for the validation metrics")
        p.add_argument("--val-fileslist", help="text file of held-out clips for the validation metrics")
        if name == "train-syncnet":
            # New training data also replace the packaged config's validation clips (the authors' own set).
            p.set_defaults(run=run_train_syncnet, validation_follows_data=True)
        else:
            p.set_defaults(run=run_train_unet, validation_follows_data=False)


def training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted config overrides given on the command line."""
    overrides: dict[str, Any] = {}
    if args.data_dir or args.fileslist:  # the given data replace the config's, never add to them
        overrides["data.train_data_dir"] = args.data_dir or ""
        overrides["data.train_fileslist"] = args.fileslist or ""
    named = {
        "data.train_output_dir": args.output_dir,
        "run.max_train_steps": args.max_steps,
        "data.batch_size": args.batch_size,
        "optimizer.lr": args.lr,
        "data.num_workers": args.num_workers,
        "run.device": args.device,
        "run.resume": True if args.resume else None,
    }
    if args.cache_dir:
        named["data.audio_mel_cache_dir"] = args.cache_dir
        named["data.audio_embeds_cache_dir"] = args.cache_dir
    # Held-out clips replace the config's. For train-syncnet so does new training data without them (validation
    # then falls back to the training clips), never the authors' validation set of the packaged config.
    new_data = args.validation_follows_data and (args.data_dir or args.fileslist)
    if args.val_data_dir or args.val_fileslist or new_data:
        named["data.val_data_dir"] = args.val_data_dir or ""
        named["data.val_fileslist"] = args.val_fileslist or ""
    overrides.update({k: v for k, v in named.items() if v is not None})
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"cannot read --set {item!r}", "write --set section.key=value, e.g. --set data.batch_size=8")
        overrides[key.strip()] = parse_value(value)
    return overrides


def parse_value(text: str) -> Any:
    """A --set value: a number when it reads as one (YAML 1.1 takes `1e-4` for a string), else YAML."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def run_train_syncnet(args: argparse.Namespace) -> None:
    from ..training.syncnet import train_syncnet

    train_syncnet(args.config, training_overrides(args))


def run_train_unet(args: argparse.Namespace) -> None:
    from ..training.unet import train_unet

    train_unet(args.config, training_overrides(args))
