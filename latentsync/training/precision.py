"""Mixed precision: the autocast context of the forward pass and the gradient scaler fp16 needs."""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

import torch

from ..errors import InputError


def autocast_and_scaler(
    device: torch.device | str, mixed_precision: bool, dtype: str = "auto"
) -> tuple[Callable[[], ContextManager], torch.amp.GradScaler | None]:
    """A factory of autocast contexts for the forward pass, and the gradient scaler fp16 needs (else None).

    `dtype`: "auto" (bf16 where the GPU supports it, else fp16), "bf16" or "fp16". On CPU only bf16 is used,
    and only when asked for explicitly; otherwise CPU training runs in fp32.
    """
    device = torch.device(device)
    if dtype not in ("auto", "bf16", "fp16"):
        raise InputError(f"unknown mixed-precision dtype {dtype!r}", 'use "auto", "bf16" or "fp16"')
    if not mixed_precision or (device.type == "cpu" and dtype != "bf16"):
        return contextlib.nullcontext, None
    if device.type == "cuda" and dtype == "auto":
        dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if torch_dtype == torch.float16 else None
    return (lambda: torch.autocast(device.type, dtype=torch_dtype)), scaler
