"""Evaluation and data-filter models with parity to the published scripts: Sync-C / Sync-D (SyncNet v2 on S3FD
face tracks) and HyperIQA visual quality.

Names are imported on first use (PEP 562), so `import latentsync.evaluation` loads neither torch nor any weights.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> submodule that defines it
_EXPORTS = {
    "load_syncnet_v2": "syncnet_v2",
    "load_s3fd": "s3fd",
    "load_hyperiqa": "hyperiqa",
    "mfcc": "mfcc",
    "sync_confidence": "sync",
    "score_video": "crops",
    # result types
    "SyncResult": "sync",
    "CombinedSync": "sync",
    "FaceTrack": "crops",
    "TrackSync": "crops",
    "VideoSync": "crops",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .crops import FaceTrack, TrackSync, VideoSync, score_video
    from .hyperiqa import load_hyperiqa
    from .mfcc import mfcc
    from .s3fd import load_s3fd
    from .sync import CombinedSync, SyncResult, sync_confidence
    from .syncnet_v2 import load_syncnet_v2


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
