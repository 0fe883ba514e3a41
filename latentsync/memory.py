"""Keeping the process's memory flat while frame-sized buffers come and go in several threads."""

from __future__ import annotations

import ctypes
import sys

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h


def return_large_buffers_to_os(threshold_bytes: int = 1 << 20) -> bool:
    """Serve allocations of `threshold_bytes` or more with mmap, so freed frames go back to the OS at once.

    glibc raises its mmap threshold each time a large block is freed; after that, frame-sized buffers come from
    per-thread heaps that keep freed memory, and with decoder, aligner and encoder threads the resident size
    climbs to several GB on long videos. Fixing the threshold stops that. Returns False where it does not apply
    (not glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
