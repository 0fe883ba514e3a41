"""Reading the published YAML configs (sections `model:`, `data:`, `run:` ...)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import InputError


class _ConfigLoader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-5` (no dot) as text; the published configs write learning rates and eps that way."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def load_config(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A whole config as a plain dict, from a YAML/JSON path or a mapping (copied)."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if not path.is_file():
        raise InputError(f"config file not found: {path}", "pass the path of a published YAML config")
    with open(path, encoding="utf-8") as f:
        data = yaml.load(f, Loader=_ConfigLoader)  # YAML is a superset of JSON
    if not isinstance(data, dict):
        raise InputError(f"config {path} is not a mapping of sections", "use the published layout (model:, data:, ...)")
    return data


def model_section(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """The `model:` section of a published config, or the mapping itself when it has no such section."""
    cfg = load_config(source)
    return dict(cfg["model"]) if isinstance(cfg.get("model"), Mapping) else cfg
