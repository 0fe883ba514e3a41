"""Keeping a long job's memory flat without paying for it in page faults.

A 16-frame chunk of 1080p video is 100 MB, and every stage makes frame-sized temporaries. Memory the process gets
from the OS costs a page fault per 4 KiB page when first written: an earlier version, which had every block over
1 MiB served by a fresh mmap, spent 43-60 % of a 1080p job's wall time in system time. Two things fix that: the
job's own large arrays come from `BufferPool`s and are reused (decoded chunks, the writer's frames), and
`keep_freed_memory` has the C allocator reuse what the libraries (torch, FFmpeg, MediaPipe) free. The resident
size still stays flat, however long the video (see `scripts/bench_pipeline.py`).
"""

from __future__ import annotations

import ctypes
import sys
import threading

import numpy as np


class BufferPool:
    """Arrays of one shape and dtype, handed out by `take` and returned with `give` for the next taker.

    A pool never blocks: `take` allocates when every array is in use, so the number of arrays (`allocated`) is
    the most the caller held at once. Thread-safe.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type = np.uint8):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.allocated = 0
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self) -> np.ndarray:
        """An array of the pool's shape; its contents are whatever the last user left."""
        with self._lock:
            if self._free:
                return self._free.pop()
            self.allocated += 1
        return np.empty(self.shape, self.dtype)

    def give(self, array: np.ndarray) -> None:
        """Return an array from `take` (or a view of one, e.g. its first rows) for reuse; the caller must not use
        it afterwards."""
        while isinstance(array.base, np.ndarray):  # a view: return the array it was cut from
            array = array.base
        if array.shape != self.shape or array.dtype != self.dtype:
            raise ValueError(f"not an array of this pool: {array.dtype} {array.shape}, "
                             f"pool holds {self.dtype} {self.shape}")
        with self._lock:
            if any(free is array for free in self._free):
                raise ValueError("this array was already given back")
            self._free.append(array)


# mallopt parameter numbers in glibc's malloc.h
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def keep_freed_memory(arenas: int = 2) -> bool:
    """Have the C allocator keep freed memory for reuse instead of handing it back to the OS and faulting it in
    again, while the resident size stays flat. Process-wide; returns False where it does not apply (not glibc).

    The job's own large arrays come from `BufferPool`s, but torch, FFmpeg and MediaPipe allocate frame-sized
    temporaries of their own for every frame. By default glibc returns freed heap tops to the OS and serves some
    of these blocks with a fresh mmap, so every reuse faults in each 4 KiB page again. Three settings stop that:
    blocks under 32 MB always come from the heap (a fixed threshold; the default one moves with what was freed
    last), the heap is never trimmed, and at most `arenas` heaps serve all threads, so that the memory kept for
    reuse is not multiplied by the number of threads.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    settings = ((_M_MMAP_THRESHOLD, 32 * 2**20), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_ARENA_MAX, arenas))
    applied = [libc.mallopt(parameter, value) == 1 for parameter, value in settings]  # every one, even after a refusal
    return all(applied)
