"""Files in and out: opening a user's media file for reading, and atomic output (temporary file, then rename)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import av

from .errors import InputError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; it replaces `target` only if the block succeeds.

    The temporary file keeps the target's suffix (unless `suffix` is given) so that tools which pick a
    format from the extension (ffmpeg muxers, safetensors) behave as for the real name.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=suffix or target.suffix, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes owner-only files; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def open_media(path: str | os.PathLike, kind: str, hint: str) -> av.container.InputContainer:
    """Open `path` (a `kind` file: "video", "audio") with PyAV, or raise an InputError that says what is wrong.

    Tags in odd encodings are ignored: they must never stop a file whose streams are fine.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{kind} file not found: {path}", "check the path")
    if path.is_dir():
        raise InputError(f"expected a {kind} file, got a directory: {path}", "pass the path of a file")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path} as {kind}: {exc}", hint) from exc
