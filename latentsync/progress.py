"""Progress bars that step aside for errors: a failed stage removes its bar instead of redrawing it, so the error
message is the last thing on the terminal."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def progress_bar(**options: Any) -> Iterator[Any]:
    """A `tqdm.auto.tqdm(**options)` bar for the block; cleared (not redrawn) when the block raises."""
    from tqdm.auto import tqdm

    bar = tqdm(**options)
    try:
        yield bar
    except BaseException:
        bar.leave = False  # close() then erases the bar
        raise
    finally:
        bar.close()
