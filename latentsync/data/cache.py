"""On-disk caches of audio features, keyed by what they are computed from, so a stale entry can never be read.

A key is the SHA-256 of a small JSON description: the kind of feature, a content hash of the decoded audio
samples, every setting of the computation and, for Whisper features, a hash of the encoder weights. Renaming,
moving or re-encoding a clip with the same audio reuses its entry; any change of the audio or of a setting
gives a new key. Entries are written atomically, so concurrent DataLoader workers (or ranks) computing the same
entry simply write the same file twice; an unreadable entry is recomputed and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..fileio import atomic_path

log = logging.getLogger(__name__)


def audio_hash(samples: np.ndarray, sample_rate: int = 16000) -> str:
    """Content hash of decoded audio (float32 samples and their rate)."""
    digest = hashlib.sha256(f"{sample_rate}:".encode())
    digest.update(np.ascontiguousarray(samples, dtype=np.float32).tobytes())
    return digest.hexdigest()


def weights_hash(module: torch.nn.Module) -> str:
    """Identity of a model's weights: a hash of every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def cache_key(**parts: Any) -> str:
    """The key of an entry: the hash of its description (JSON-serialisable values)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """Arrays stored as `.npy` files under `root/<kind>/<key[:2]>/<key>.npy`; without a root nothing is stored.

    `hits` and `misses` count lookups in this process (handy to check that a warm cache is used).
    """

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    def path(self, kind: str, key: str) -> Path | None:
        """Where the entry lives (None without a root)."""
        return None if self.root is None else self.root / kind / key[:2] / f"{key}.npy"

    def get_or_compute(self, kind: str, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The stored array for `key`, or `compute()`'s result, stored for next time."""
        path = self.path(kind, key)
        if path is not None and path.exists():
            try:
                value = np.load(path, allow_pickle=False)
                self.hits += 1
                return value
            except (OSError, ValueError) as exc:  # truncated by a crash of another tool, or disk trouble
                log.warning("cache entry %s is unreadable (%s); recomputing it", path, exc)
        self.misses += 1
        value = np.ascontiguousarray(compute())
        if path is not None:
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, value, allow_pickle=False)
        return value
