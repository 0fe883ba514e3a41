"""Random-weight models in the published file formats, for tests and benchmarks (see `models`, `face_onnx` and
`eval_models`)."""

from .eval_models import write_random_eval_models, write_random_hyperiqa, write_random_s3fd, write_random_syncnet_v2
from .models import write_random_models

__all__ = [
    "write_random_eval_models", "write_random_hyperiqa", "write_random_models", "write_random_s3fd",
    "write_random_syncnet_v2",
]
