"""The sampler: diffusers' DDIMScheduler with the published configuration (SPEC section 9)."""

from __future__ import annotations

import json
import os
from typing import Any

from diffusers import DDIMScheduler, SchedulerMixin

from ..packaged import SCHEDULER_CONFIG, packaged_file


def published_scheduler_config() -> dict[str, Any]:
    return json.loads(packaged_file(SCHEDULER_CONFIG).read_text())


def load_scheduler(config: str | os.PathLike | dict[str, Any] | None = None) -> SchedulerMixin:
    """DDIM from the published config (default), a scheduler_config.json path or a dict of its fields."""
    if config is None:
        config = published_scheduler_config()
    elif not isinstance(config, dict):
        with open(config, encoding="utf-8") as f:
            config = json.load(f)
    return DDIMScheduler.from_config(config)
