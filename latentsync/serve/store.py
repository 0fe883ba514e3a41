"""The data folder of a server: an SQLite index of jobs, and one folder of files per job.

Layout: `jobs.sqlite`; `jobs/<id>/` with the checked inputs (`video<ext>`, `audio<ext>`) and `result.mp4`;
`incoming/` for uploads still being checked. Every state change is one SQLite transaction (WAL journal), so a
server killed at any moment restarts with its queue intact: see `JobStore.recover`.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")
MAX_ATTEMPTS = 2  # a job running when the server died is retried once
RESULT_NAME = "result.mp4"
# Share of the whole job each stage reports as it progresses (measured: lip-sync dominates).
STAGE_SPAN = {"audio": (0.0, 0.1), "faces": (0.1, 0.3), "lip-sync": (0.3, 1.0)}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    stage TEXT,
    progress REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel INTEGER NOT NULL DEFAULT 0,
    settings TEXT NOT NULL,
    video_file TEXT NOT NULL,
    audio_file TEXT NOT NULL,
    video_name TEXT,
    audio_name TEXT,
    error TEXT,
    report TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created);
"""


class JobCancelled(Exception):
    """Raised inside a running job's progress callback when the job was cancelled."""


@dataclass(frozen=True)
class Job:
    """One row of the index."""

    id: str
    state: str
    stage: str | None
    progress: float
    created: float
    started: float | None
    finished: float | None
    attempts: int
    cancel: bool
    settings: dict[str, Any]
    video_file: str  # names inside the job folder (never the uploaded names)
    audio_file: str
    video_name: str | None  # the uploaded names, for display only
    audio_name: str | None
    error: str | None
    report: dict[str, Any] | None

    def public(self) -> dict[str, Any]:
        """What the API shows of a job."""
        return {
            "id": self.id, "state": self.state, "stage": self.stage, "progress": round(self.progress, 4),
            "created": self.created, "started": self.started, "finished": self.finished, "attempts": self.attempts,
            "settings": self.settings, "video_name": self.video_name, "audio_name": self.audio_name,
            "error": self.error, "report": self.report,
            "result": f"/v1/jobs/{self.id}/result" if self.state == "succeeded" else None,
        }


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["settings"] = json.loads(values["settings"])
    values["report"] = json.loads(values["report"]) if values["report"] else None
    values["cancel"] = bool(values["cancel"])
    return Job(**values)


class JobStore:
    """Jobs of one data folder; safe to use from several threads of one process."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.incoming_dir = self.root / "incoming"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "jobs.sqlite"
        self._lock = threading.Lock()
        self._wake = threading.Condition()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ---- files -------------------------------------------------------------------------------------------------

    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def result_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / RESULT_NAME

    def new_incoming(self) -> Path:
        """A fresh folder for uploads being checked (moved into a job folder by `add`, or removed)."""
        folder = self.incoming_dir / uuid.uuid4().hex
        folder.mkdir()
        return folder

    # ---- changes -------------------------------------------------------------------------------------------------

    def add(self, incoming: Path, video_file: str, audio_file: str, settings: dict[str, Any],
            video_name: str | None = None, audio_name: str | None = None) -> Job:
        """Queue a job whose checked inputs are in `incoming` (that folder becomes the job's folder)."""
        job_id = uuid.uuid4().hex
        incoming.rename(self.job_dir(job_id))
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, state, created, settings, video_file, audio_file, video_name, audio_name) "
                "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                (job_id, time.time(), json.dumps(settings), video_file, audio_file, video_name, audio_name),
            )
        self.notify()
        return self.get(job_id)

    def claim(self) -> Job | None:
        """Take the oldest queued job: it becomes running, one more attempt counted."""
        with self._transaction() as db:
            row = db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created LIMIT 1").fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1, stage = NULL, "
                       "progress = 0 WHERE id = ?", (time.time(), row["id"]))
        return self.get(row["id"])

    def set_progress(self, job_id: str, stage: str, done: int, total: int) -> None:
        """Record a running job's stage; raise JobCancelled when it was cancelled meanwhile."""
        start, end = STAGE_SPAN.get(stage, (0.0, 1.0))
        progress = start + (end - start) * (done / total if total else 1.0)
        with self._transaction() as db:
            row = db.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
            db.execute("UPDATE jobs SET stage = ?, progress = ? WHERE id = ?", (stage, progress, job_id))
        if row is None or row["cancel"]:
            raise JobCancelled(job_id)

    def finish(self, job_id: str, state: str, error: str | None = None, report: dict | None = None) -> None:
        """A running job ends (succeeded, failed or cancelled)."""
        assert state in FINISHED
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, error = ?, report = ?, finished = ?, progress = CASE WHEN ? = 'succeeded' "
                "THEN 1.0 ELSE progress END WHERE id = ?",
                (state, error, json.dumps(report) if report is not None else None, time.time(), state, job_id),
            )

    def release(self, job_id: str) -> None:
        """Put a running job back in the queue without counting its attempt (the server is stopping cleanly)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = 'queued', attempts = MAX(attempts - 1, 0), stage = NULL, progress = 0 "
                       "WHERE id = ? AND state = 'running'", (job_id,))

    def cancel_or_remove(self, job_id: str) -> str | None:
        """DELETE semantics: a queued job is cancelled, a running one is asked to stop (its worker marks it
        cancelled), a finished one is removed with its files. Returns what happened, None for an unknown id."""
        with self._transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            state = row["state"]
            if state == "queued":
                db.execute("UPDATE jobs SET state = 'cancelled', cancel = 1, finished = ?, error = 'cancelled before "
                           "it started' WHERE id = ?", (time.time(), job_id))
                result = "cancelled"
            elif state == "running":
                db.execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (job_id,))
                result = "cancelling"
            else:
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                result = "removed"
        if result == "removed":
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        return result

    def recover(self) -> list[str]:
        """After a restart: jobs left running are queued again once, then failed with the reason; a job whose
        result was already written counts as done; unfinished files of dead runs and uploads are removed.
        Returns the ids of the jobs that were running."""
        shutil.rmtree(self.incoming_dir, ignore_errors=True)
        self.incoming_dir.mkdir()
        with self._transaction() as db:
            rows = db.execute("SELECT id, attempts, cancel FROM jobs WHERE state = 'running'").fetchall()
            for row in rows:
                job_id = row["id"]
                for leftover in self.job_dir(job_id).glob(".*"):  # a temporary output (atomic_path) of the dead run
                    leftover.unlink(missing_ok=True)
                if self.result_path(job_id).exists():
                    db.execute("UPDATE jobs SET state = 'succeeded', progress = 1.0, finished = ?, error = NULL "
                               "WHERE id = ?", (time.time(), job_id))
                elif row["cancel"]:
                    db.execute("UPDATE jobs SET state = 'cancelled', finished = ?, error = 'cancelled' WHERE id = ?",
                               (time.time(), job_id))
                elif row["attempts"] >= MAX_ATTEMPTS:
                    db.execute(
                        "UPDATE jobs SET state = 'failed', finished = ?, error = ? WHERE id = ?",
                        (time.time(), (f"the server stopped while this job was running, {row['attempts']} times; "
                                       "it is not retried again"), job_id),
                    )
                else:
                    db.execute("UPDATE jobs SET state = 'queued', stage = NULL, progress = 0, error = ? WHERE id = ?",
                               ("the server stopped while this job was running; retrying once", job_id))
        known = {job.id for job in self.list(limit=None)}
        for folder in self.jobs_dir.iterdir():  # files of a job whose row was never written
            if folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)
        return [row["id"] for row in rows]

    def expire(self, keep_seconds: float) -> list[str]:
        """Remove finished jobs (row and files) older than `keep_seconds`; returns their ids."""
        cutoff = time.time() - keep_seconds
        with self._transaction() as db:
            ids = [r["id"] for r in db.execute(
                "SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished < ?", (cutoff,))]
            db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in ids])
        for job_id in ids:
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        return ids

    # ---- reading ---------------------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row is not None else None

    def list(self, state: str | None = None, limit: int | None = 100) -> list[Job]:
        """Jobs, newest first."""
        query, params = "SELECT * FROM jobs", []
        if state is not None:
            query += " WHERE state = ?"
            params.append(state)
        query += " ORDER BY created DESC"
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        with self._connect() as db:
            return [_job(r) for r in db.execute(query, params)]

    # ---- waking workers ----------------------------------------------------------------------------------------

    def notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def wait(self, seconds: float) -> None:
        """Sleep until a job is added (or `seconds` pass)."""
        with self._wake:
            self._wake.wait(seconds)
