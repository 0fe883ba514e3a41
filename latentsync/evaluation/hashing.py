"""SHA-256 of weight files for reports, remembered by (path, size, modification time) so that multi-GB files
are hashed once, not on every evaluation. The memory lives in `<LATENTSYNC_CACHE>/file_hashes.json`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..fileio import atomic_path
from ..weights import archive_cache

CHUNK = 8 * 2**20


def _cache_file() -> Path:
    return archive_cache() / "file_hashes.json"


def _read_cache() -> dict:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (or of a folder's files, in name order, for multi-file components)."""
    path = Path(path).resolve()
    if path.is_dir():
        digest = hashlib.sha256()
        for part in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(part.relative_to(path).as_posix().encode() + b"\0" + file_sha256(part).encode())
        return digest.hexdigest()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = _read_cache()
    if key in cache:
        return cache[key]
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}|")}  # forget older versions of the file
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    cache[key] = digest.hexdigest()
    try:
        with atomic_path(_cache_file()) as tmp:
            tmp.write_text(json.dumps(cache))
    except OSError:  # a read-only cache folder only costs re-hashing next time
        pass
    return cache[key]
