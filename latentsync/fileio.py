"""Files in and out: checking and opening a user's media file for reading, and atomic output (temporary file, then
rename)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from .errors import InputError

if TYPE_CHECKING:
    import av

_PERMISSION_HINT = "check the file's permissions, e.g. `chmod a+r FILE`"


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


def check_readable(path: str | os.PathLike, kind: str) -> Path:
    """`path` as a Path when it is a readable file, else an InputError naming the `kind` of file expected."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{kind} file not found: {path}", "check the path")
    if path.is_dir():
        raise InputError(f"the {kind} path {path} is a directory, not a file", "pass the path of a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {path}: permission denied", _PERMISSION_HINT)
    return path


def ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's words for an error, without the error number and the path PyAV adds."""
    reason = getattr(exc, "strerror", None) or str(exc)
    return reason[:1].lower() + reason[1:]


def open_media(path: str | os.PathLike, kind: str, hint: str) -> av.container.InputContainer:
    """Open `path` (a `kind` file: "video", "audio") with PyAV, or raise an InputError that says what is wrong.

    Tags in odd encodings are ignored: they must never stop a file whose streams are fine.
    """
    import av  # here, so that the path checks above stay quick to import

    path = check_readable(path, kind)
    try:
        return av.open(str(path), metadata_errors="ignore")
    except PermissionError as exc:  # PyAV's permission error is FFmpeg's and Python's
        raise InputError(f"cannot read {path}: permission denied", _PERMISSION_HINT) from exc
    except av.FFmpegError as exc:
        raise InputError(f"cannot read {path} as {kind}: {ffmpeg_reason(exc)}", hint) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot read {path} as {kind}: {exc.reason}", hint) from exc
