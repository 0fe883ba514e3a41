"""The lip-sync pipeline: components in, lip-synced video out."""

from .lipsync import CHUNK_FRAMES, LipSyncPipeline

__all__ = ["LipSyncPipeline", "CHUNK_FRAMES"]
