"""Reading and writing weight files in the published formats.

Accepted inputs: `torch.save` files (`.pt`, `.pth`, `.bin`, `.ckpt`) holding a bare state dict or one wrapped as
`{"state_dict": ...}` (LatentSync) or `{"model_state_dict": ...}` (openai-whisper), and `.safetensors`.
Pickles are always read with `weights_only=True`: a checkpoint can never run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import load_file, save_file

from .errors import CheckpointError
from .fileio import atomic_path

WRAPPER_KEYS = ("state_dict", "model_state_dict")  # LatentSync, openai-whisper


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw content of a weights file (tensors memory-mapped where the format allows)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}", "check the path, or run `latentsync download`")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises several types for damaged files
            raise CheckpointError(f"cannot read safetensors file {path}: {exc}",
                                  "the file may be truncated (re-download it) or not a safetensors weights file") from exc
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) pickles cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: {exc}",
            "the file may be truncated (re-download it) or not a PyTorch/safetensors weights file",
        ) from exc


def extract_state_dict(content: Mapping[str, Any], wrappers: tuple[str, ...] = WRAPPER_KEYS) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint's content: under the first of `wrappers` that holds a mapping, else
    at the top level."""
    for key in wrappers:
        if isinstance(content.get(key), Mapping):
            content = content[key]
            break
    state = {k: v for k, v in content.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError("checkpoint holds no tensors", "pass a model weights file")
    return state


def read_tensor_dict(path: str | os.PathLike, what: str, published_name: str) -> dict[str, torch.Tensor]:
    """The tensors of a file that `torch.save` wrote as a plain name -> tensor dict (the published evaluation and
    filter models), made contiguous (some files store overlapping strided views); CheckpointError otherwise."""
    content = read_checkpoint(path)
    if not isinstance(content, dict) or not content or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise CheckpointError(f"{path} is not a {what} weights file (expected a name -> tensor dict)",
                              f"pass the published {published_name}")
    return {k: v.contiguous() for k, v in content.items()}


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict stored in a `.pt` / `.safetensors` file, whatever the published wrapper."""
    return extract_state_dict(read_checkpoint(path))


def _names(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise a CheckpointError naming every missing, unexpected or wrongly shaped tensor."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_names(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {len(wrong)}: {_names(wrong)}")
    if problems:
        raise CheckpointError(
            f"{what} checkpoint does not match the model ({'; '.join(problems)})",
            "check that the config matches the checkpoint (e.g. the 1.5/1.6 U-Net config for latentsync_unet.pt)",
        )


def build_with_weights(
    factory: Callable[[], torch.nn.Module],
    state: Mapping[str, torch.Tensor] | None,
    what: str,
    dtype: torch.dtype = torch.float32,
) -> torch.nn.Module:
    """Instantiate a model in `dtype`; with weights, build it on the meta device and adopt the tensors, each cast
    straight to `dtype` (an fp16 file loaded as fp16 never passes through an fp32 copy)."""
    if state is None:
        return factory().to(dtype)
    with torch.device("meta"):
        model = factory()
    check_state_dict(model, state, what)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model


def save_safetensors(
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write tensors atomically as safetensors; floating tensors are cast to `dtype` when given."""
    tensors = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, half: bool = False) -> Path:
    """Convert a published `.pt` checkpoint into `.safetensors` (optionally fp16)."""
    content = read_checkpoint(src)
    state = extract_state_dict(content)
    metadata = {"source": Path(src).name}
    if isinstance(content.get("global_step"), int):
        metadata["global_step"] = str(content["global_step"])
    return save_safetensors(state, dst, torch.float16 if half else None, metadata)
