"""Files shipped inside the package: configs, the mouth mask, the demo clip."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEMO_VIDEO = "assets/demo/demo_video.mp4"
DEMO_AUDIO = "assets/demo/demo_speech.flac"
MOUTH_MASK = "assets/mask.png"
SCHEDULER_CONFIG = "configs/scheduler_config.json"


def packaged_file(relative: str | Path) -> Path:
    """The path of a file shipped in the package, given relative to the package root (e.g. "configs/unet/stage2.yaml").

    The package is installed as plain files (setuptools package data), so the path can be opened directly.
    """
    return Path(str(resources.files("latentsync").joinpath(str(relative))))
