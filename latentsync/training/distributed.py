"""Processes: one per device. Under `torchrun` (or `python -m torch.distributed.run`) the environment variables
RANK / WORLD_SIZE / LOCAL_RANK select distributed data parallel training (NCCL on CUDA, gloo on CPU); without
them everything runs in one process. Only the main process writes files; the others wait at a barrier."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import nn

from ..errors import InputError


@dataclass
class DistInfo:
    """Where this process stands in the job."""

    rank: int
    world_size: int
    device: torch.device
    is_main: bool


def setup_distributed(device: str | None = None) -> DistInfo:
    """Join the process group started by torchrun, or describe a single process.

    `device`: "cpu", "cuda" or "cuda:N"; by default CUDA when available. Under torchrun a CUDA device is always
    the process's local rank, and the backend is NCCL on CUDA, gloo on CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if wanted.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("CUDA was asked for but no CUDA device is available", "pass --device cpu")
        index = local_rank if world_size > 1 or wanted.index is None else wanted.index
        wanted = torch.device("cuda", index)
        torch.cuda.set_device(wanted)
    if world_size > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if wanted.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world_size, device=wanted, is_main=rank == 0)


def cleanup_distributed() -> None:
    """Leave the process group, if any (call once at the end of training)."""
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if torch_dist.is_initialized():
        torch_dist.barrier()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `values` over all processes (the tensor itself in a single process)."""
    if torch_dist.is_initialized():
        values = values.clone()
        torch_dist.all_reduce(values)
    return values


def wrap_ddp(model: nn.Module, dist: DistInfo, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around `model` when several processes train, else the model itself.

    Pass `find_unused_parameters=True` when some trainable parameters get no gradient in a step (e.g. a
    frozen branch that is still marked trainable).
    """
    if dist.world_size == 1:
        return model
    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under DDP / torch.compile wrappers, whose state dict has the published key names."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model
