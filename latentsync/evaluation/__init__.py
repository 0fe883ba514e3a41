"""Evaluation and data-filter models with parity to the published scripts: Sync-C / Sync-D (SyncNet v2 on S3FD
face tracks) and HyperIQA visual quality. Importing this package loads no weights and runs no models."""

from .crops import FaceTrack, TrackSync, VideoSync, score_video
from .hyperiqa import HyperIQA, load_hyperiqa
from .mfcc import mfcc
from .s3fd import S3FD, load_s3fd
from .sync import CombinedSync, SyncResult, combine_tracks, sync_confidence
from .syncnet_v2 import SyncNetV2, load_syncnet_v2

__all__ = [
    "CombinedSync", "FaceTrack", "HyperIQA", "S3FD", "SyncNetV2", "SyncResult", "TrackSync", "VideoSync",
    "combine_tracks", "load_hyperiqa", "load_s3fd", "load_syncnet_v2", "mfcc", "score_video", "sync_confidence",
]
