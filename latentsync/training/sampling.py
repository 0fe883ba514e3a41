"""Seeds and the resumable order in which each process reads the training samples."""

from __future__ import annotations

import itertools
import random
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from ..errors import InputError
from .distributed import DistInfo


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed Python, NumPy and torch; each rank gets its own stream (seed + rank)."""
    seed = int(seed) + int(rank)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TrainSampler(Sampler[int]):
    """An endless, resumable order of sample ids for one process, `batch_size` ids per optimiser step.

    Each pass over the data is a fresh permutation seeded by (seed, pass). The ids run past the dataset size:
    id = pass * size + position, and the datasets of `latentsync.data` read clip `id % size` and seed their
    random window choice with the id, so each pass also draws new windows. Starting at `start_step` yields
    exactly the ids an uninterrupted run would have used from that step on, on every rank.
    """

    def __init__(self, size: int, batch_size: int, seed: int, dist: DistInfo, start_step: int = 0):
        if size < 1:
            raise InputError("the training set is empty", "check --data-dir / --fileslist")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size, self.start_step = dist.rank, dist.world_size, start_step

    def __iter__(self) -> Iterator[int]:
        permutation_pass, permutation = -1, None
        for step in itertools.count(self.start_step):
            first = (step * self.world_size + self.rank) * self.batch_size  # global position of this batch
            for position in range(first, first + self.batch_size):
                data_pass, offset = divmod(position, self.size)
                if data_pass != permutation_pass:
                    permutation_pass = data_pass
                    permutation = np.random.default_rng([self.seed, data_pass]).permutation(self.size)
                yield data_pass * self.size + int(permutation[offset])

    def __len__(self) -> int:
        return 2**62  # endless; DataLoader only needs a number
