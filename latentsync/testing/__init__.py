"""Random-weight models in the published file formats (see `models` and `face_onnx`) and synthetic talking clips
with a known mouth-audio relation (see `synthetic`), for tests and benchmarks."""

from .models import write_random_models
from .synthetic import SyncClip, make_sync_clip, make_sync_clips

__all__ = ["SyncClip", "make_sync_clip", "make_sync_clips", "write_random_models"]
