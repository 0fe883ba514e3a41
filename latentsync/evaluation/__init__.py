"""Evaluation and data-filter models with parity to the published scripts: Sync-C / Sync-D (SyncNet v2 on S3FD
face tracks) and HyperIQA visual quality.

Names are imported on first use (PEP 562), so `import latentsync.evaluation` loads neither torch nor any weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

# public name -> submodule that defines it
_EXPORTS = {
    "load_syncnet_v2": ".syncnet_v2",
    "load_s3fd": ".s3fd",
    "load_hyperiqa": ".hyperiqa",
    "mfcc": ".mfcc_features",  # not ".mfcc": a submodule of that name would shadow the function
    "sync_confidence": ".sync",
    "score_video": ".crops",
    "evaluate": ".api",
    # result types
    "SyncResult": ".sync",
    "CombinedSync": ".sync",
    "FaceTrack": ".crops",
    "TrackSync": ".crops",
    "VideoSync": ".crops",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .api import evaluate
    from .crops import FaceTrack, TrackSync, VideoSync, score_video
    from .hyperiqa import load_hyperiqa
    from .mfcc_features import mfcc
    from .s3fd import load_s3fd
    from .sync import CombinedSync, SyncResult, sync_confidence
    from .syncnet_v2 import load_syncnet_v2

__getattr__ = lazy_exports(__name__, _EXPORTS)
