"""Reused frame buffers: the pool itself, batches decoded into it, and a whole job's buffers staying few."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import MEDIA
from latentsync.media import read_batches, read_frames
from latentsync.memory import BufferPool

DEMO1 = MEDIA / "demo1_360p.mp4"  # 50 frames of 640 x 360


def test_pool_hands_back_what_it_was_given():
    pool = BufferPool((4, 8, 3))
    first = pool.take()
    assert first.shape == (4, 8, 3) and first.dtype == np.uint8 and pool.allocated == 1
    second = pool.take()  # the first is still out: a new one
    assert second is not first and pool.allocated == 2
    pool.give(first[:2])  # a view goes back as the array it was cut from
    assert pool.take() is first and pool.allocated == 2
    with pytest.raises(ValueError, match="not an array of this pool"):
        pool.give(np.zeros((4, 8, 3), np.float32))
    pool.give(second)
    with pytest.raises(ValueError, match="already given back"):
        pool.give(second)


def test_batches_decoded_into_a_pool_reuse_one_array():
    frames = np.stack([frame for _, frame in read_frames(DEMO1)])
    pool = BufferPool((16, *frames.shape[1:]))
    bases, sizes = set(), []
    for start, batch in zip(range(0, 50, 16), read_batches(DEMO1, 16, pool=pool)):
        np.testing.assert_array_equal(batch, frames[start : start + 16])
        bases.add(id(batch if batch.base is None else batch.base))
        sizes.append(len(batch))
        pool.give(batch)
    assert sizes == [16, 16, 16, 2]
    assert pool.allocated == 1 and len(bases) == 1  # one 16-frame array served all four batches

    kept = list(read_batches(DEMO1, 16, pool=pool))  # batches not given back are never overwritten
    assert pool.allocated == 4
    np.testing.assert_array_equal(np.concatenate(kept), frames)


def test_a_pool_of_another_size_is_refused():
    with pytest.raises(ValueError, match="the pool holds"):
        next(read_batches(DEMO1, 16, pool=BufferPool((8, 360, 640, 3))))
