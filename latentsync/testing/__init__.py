"""Random-weight models in the published file formats, for tests and benchmarks (see `models` and `face_onnx`)."""

from .models import write_random_models

__all__ = ["write_random_models"]
