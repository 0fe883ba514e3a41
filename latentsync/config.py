"""Reading the published YAML configs (sections `model:`, `data:`, `run:` ...)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import InputError


def load_config(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A whole config as a plain dict, from a YAML/JSON path or a mapping (copied)."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise InputError(f"config file not found: {path}", "pass the path of a published YAML config")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)  # YAML is a superset of JSON
    if not isinstance(data, dict):
        raise InputError(f"config {path} is not a mapping of sections", "use the published layout (model:, data:, ...)")
    return data


def model_section(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """The `model:` section of a published config, or the mapping itself when it has no such section."""
    cfg = load_config(source)
    return dict(cfg["model"]) if isinstance(cfg.get("model"), Mapping) else cfg
