"""Overlapping stages in threads: a bounded prefetcher, an ordered background worker, and per-stage timers.

Nothing here knows what the stages do; the pipeline's chunk loop wires its stages through these.
"""

from __future__ import annotations

import queue
import threading
import time
from contextlib import contextmanager
from typing import Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")
_END = object()


def prefetch(items: Iterable[T], depth: int, name: str = "latentsync-prefetch") -> Iterator[T]:
    """Iterate `items` in a background thread, at most `depth` items ahead; its errors are raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(item)
            q.put(_END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(exc)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


class BackgroundWorker(Generic[T]):
    """Runs `fn(item)` for submitted items in one background thread, in order, at most `depth` items queued.

    Use as a context manager. An error in `fn` stops the work; it is raised at the next `submit` or on leaving the
    block (unless the block itself is leaving with an error).
    """

    def __init__(self, fn: Callable[[T], None], depth: int = 2, name: str = "latentsync-worker"):
        self._fn = fn
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)

    def _work(self) -> None:
        while (item := self._queue.get()) is not _END:
            if self._error is None:
                try:
                    self._fn(item)
                except BaseException as exc:
                    self._error = exc

    def submit(self, item: T) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def __enter__(self) -> BackgroundWorker[T]:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._queue.put(_END)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error


class StageTimer:
    """Adds up wall seconds per named stage into `seconds` (each stage is timed by one thread only)."""

    def __init__(self, seconds: dict[str, float]):
        self.seconds = seconds

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def iterate(self, name: str, items: Iterable[T]) -> Iterator[T]:
        """Yield from `items`, counting the time spent producing each item."""
        iterator = iter(items)
        while True:
            with self(name):
                item = next(iterator, _END)
            if item is _END:
                return
            yield item
