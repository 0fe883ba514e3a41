"""Random-weight models in the published file formats (see `models`, `face_onnx`, `eval_models` and
`metric_models`) and synthetic talking clips with a known mouth-audio relation (see `synthetic`), for tests and
benchmarks."""

from .eval_models import write_random_eval_models, write_random_hyperiqa, write_random_s3fd, write_random_syncnet_v2
from .models import write_random_models
from .synthetic import SyncClip, make_sync_clip, make_sync_clips

__all__ = [
    "SyncClip", "make_sync_clip", "make_sync_clips", "write_random_eval_models", "write_random_hyperiqa",
    "write_random_models", "write_random_s3fd", "write_random_syncnet_v2",
]
