"""The lip-sync pipeline: components in, lip-synced video out."""

from .job import DEFAULT_GUIDANCE, DEFAULT_STEPS, LipSyncJob, LipSyncOutput, RunOptions, RunReport, check_inputs
from .lipsync import CHUNK_FRAMES, LipSyncPipeline

__all__ = [
    "CHUNK_FRAMES", "DEFAULT_GUIDANCE", "DEFAULT_STEPS", "LipSyncJob", "LipSyncOutput", "LipSyncPipeline", "RunOptions",
    "RunReport", "check_inputs",
]
