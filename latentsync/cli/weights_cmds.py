"""`latentsync download` and `latentsync convert`: fetching and converting published weights."""

from __future__ import annotations

import argparse

from .. import weights


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch the published weights (Hugging Face Hub) into a folder or the cache")
    p.add_argument("--version", default=weights.DEFAULT_VERSION, choices=sorted(weights.VERSIONS))
    p.add_argument(
        "--components",
        default=",".join(weights.INFERENCE),
        help=f"comma-separated, from: {', '.join(weights.COMPONENTS)} (default: what inference needs)",
    )
    p.add_argument("--checkpoint-dir", help="folder in the published checkpoints/ layout (default: the caches)")
    p.set_defaults(run=run_download)

    p = sub.add_parser("convert", help="write a published .pt checkpoint as .safetensors")
    p.add_argument("source", help="a .pt file ({'state_dict': ...} or a bare state dict)")
    p.add_argument("target", help="the .safetensors file to write")
    p.add_argument("--fp16", action="store_true", help="store floating-point tensors as float16 (half the size)")
    p.set_defaults(run=run_convert)


def run_download(args: argparse.Namespace) -> None:
    components = [c.strip() for c in args.components.split(",") if c.strip()]
    paths = weights.resolve(components, args.version, args.checkpoint_dir)
    for name, path in sorted(paths.items()):
        print(f"{name}: {path}")


def run_convert(args: argparse.Namespace) -> None:
    from ..checkpoint import convert_checkpoint  # torch: loaded only for this command

    path = convert_checkpoint(args.source, args.target, half=args.fp16)
    print(f"wrote {path}")
