"""The manifest: one SQLite file (`OUT_DIR/manifest.sqlite`) with the result of every step of every item.

Tables:
- `steps`: one row per (item, step): the key the result belongs to (input identity + the step's settings + weights,
  chained through the steps it depends on), its status (`done`, `rejected`, `error`), the result as JSON, the
  rejection reason and detail, and the run that computed it. A step whose stored key matches is never run again.
- `videos`: one row per source video: size and modification time (to avoid hashing unchanged files again), its
  content hash, length, state (`pending`, `done`, `rejected`), the step that rejected it and why.
- `clips`: one row per segment: its frames and seconds, every score (face size and count, sync confidence and
  offset, quality), the published clip path when kept, state, rejecting step and reason, train/val split.
- `runs`: one row per run, with its settings.

Every change is one transaction, so a run killed at any moment leaves the results of finished items and nothing
half-recorded; only the main process writes it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (run INTEGER PRIMARY KEY, settings TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS steps (
    item TEXT NOT NULL, step TEXT NOT NULL, key TEXT NOT NULL, status TEXT NOT NULL, result TEXT,
    reason TEXT, detail TEXT, run INTEGER NOT NULL, PRIMARY KEY (item, step));
CREATE TABLE IF NOT EXISTS videos (
    video TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, content TEXT, seconds REAL,
    state TEXT NOT NULL, step TEXT, reason TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS clips (
    clip TEXT PRIMARY KEY, video TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, seconds REAL NOT NULL,
    face_size REAL, faces INTEGER, sync_confidence REAL, sync_offset INTEGER, quality REAL, path TEXT,
    state TEXT NOT NULL, step TEXT, reason TEXT, detail TEXT, split TEXT);
"""
CLIP_SCORES = ("face_size", "faces", "sync_confidence", "sync_offset", "quality")


class Manifest:
    """Read and update the manifest of one output folder (single writer: the process running `prepare`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")  # a killed writer never corrupts it; readers see committed rows
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def transaction(self):
        """`with manifest.transaction():` groups changes into one atomic commit."""
        return _Transaction(self.db)

    def start_run(self, settings: dict) -> int:
        with self.transaction():
            cur = self.db.execute("INSERT INTO runs (settings) VALUES (?)", (json.dumps(settings, sort_keys=True),))
        return int(cur.lastrowid)

    # steps
    def step(self, item: str, step: str) -> dict | None:
        row = self.db.execute(
            "SELECT key, status, result, reason, detail, run FROM steps WHERE item = ? AND step = ?", (item, step)
        ).fetchone()
        if row is None:
            return None
        key, status, result, reason, detail, run = row
        return {"key": key, "status": status, "result": json.loads(result) if result else None, "reason": reason,
                "detail": detail, "run": run}

    def put_step(self, item: str, step: str, key: str, status: str, result: Any, reason: str | None,
                 detail: str | None, run: int) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (item, step, key, status, None if result is None else json.dumps(result, sort_keys=True), reason, detail, run),
        )

    def forget_step(self, item: str, step: str) -> None:
        self.db.execute("DELETE FROM steps WHERE item = ? AND step = ?", (item, step))

    # videos and clips
    def video(self, video: str) -> dict | None:
        row = self.db.execute("SELECT size, mtime_ns, content FROM videos WHERE video = ?", (video,)).fetchone()
        return None if row is None else {"size": row[0], "mtime_ns": row[1], "content": row[2]}

    def put_video(self, video: str, **values: Any) -> None:
        self._upsert("videos", "video", video, values)

    def put_clip(self, clip: str, **values: Any) -> None:
        self._upsert("clips", "clip", clip, values)

    def _upsert(self, table: str, key_column: str, key: str, values: dict) -> None:
        """Update the row's given columns, or insert the row (SQLite checks NOT NULL before an ON CONFLICT)."""
        columns = list(values)
        cur = self.db.execute(f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in columns)} WHERE {key_column} = ?",
                              (*values.values(), key))
        if cur.rowcount == 0:
            self.db.execute(f"INSERT INTO {table} ({key_column}, {', '.join(columns)}) VALUES (?{', ?' * len(columns)})",
                            (key, *values.values()))

    def clips_of(self, video: str) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT clip FROM clips WHERE video = ? ORDER BY start", (video,))]

    def forget(self, items: Iterable[str], table: str) -> None:
        """Drop items (clips of a changed segmentation, videos no longer in the input) and their step results."""
        column = "clip" if table == "clips" else "video"
        for item in items:
            self.db.execute(f"DELETE FROM {table} WHERE {column} = ?", (item,))
            self.db.execute("DELETE FROM steps WHERE item = ?", (item,))

    def rows(self, table: str, where: str = "", order: str = "") -> list[dict]:
        cur = self.db.execute(f"SELECT * FROM {table} {where} {order}")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
