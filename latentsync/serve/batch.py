"""`latentsync batch`: many jobs from a CSV or JSONL file, the models loaded once.

Each row names a video, a speech track, optionally an output name and the job options (the fields of
`POST /v1/jobs`: steps, guidance, seed, face_x, face_y, face_index). Relative paths are relative to the jobs
file. Every row gets a status file next to its output (`<output>.status.json`); a row that fails is reported
there and the others go on. A re-run skips the rows that finished (succeeded, or failed with the same inputs
and options: fix the input and it runs again). The Ray engine runs the same rows on the actors of a cluster,
one per GPU, each with the models loaded; they write the same files (the output folder must be shared).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import InputError, LatentSyncError
from ..fileio import atomic_path
from ..pipeline import LipSyncPipeline, check_inputs
from .uploads import job_settings, run_options

log = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".mp4", ".mov", ".mkv")
NUMBER_FIELDS = {"steps": int, "guidance": float, "seed": int, "face_x": float, "face_y": float, "face_index": int}
KNOWN_FIELDS = {"video", "audio", "output", "version", *NUMBER_FIELDS}


@dataclass
class Row:
    """One job of a jobs file; `problem` is set when the row itself cannot be used."""

    number: int  # from 1, as a person counts the rows
    video: Path | None = None
    audio: Path | None = None
    output: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    def fingerprint(self) -> dict[str, Any]:
        """The inputs and options: a failed row with the same fingerprint is not run again."""
        def stat(path: Path | None) -> list:
            try:
                info = path.stat()
                return [str(path), info.st_size, info.st_mtime_ns]
            except (OSError, AttributeError):
                return [str(path), None, None]

        return {"video": stat(self.video), "audio": stat(self.audio), "settings": self.settings, "problem": self.problem}


def read_jobs(path: str | os.PathLike, version: str) -> list[Row]:
    """The rows of a .csv (with a header line) or .jsonl jobs file; a bad row is kept with its problem."""
    path = Path(path).resolve()  # rows name paths relative to it, for Ray actors in other folders too
    if not path.is_file():
        raise InputError(f"jobs file not found: {path}", "pass a .csv or .jsonl file of jobs")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise InputError(f"a jobs file is .csv or .jsonl, got {path.name}", "one job per row: video, audio, output, options")
    text = path.read_text(encoding="utf-8-sig")
    records: list[Any] = []
    if suffix == ".csv":
        records = list(csv.DictReader(text.splitlines()))
    else:
        for line in text.splitlines():
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    records.append(f"not a JSON object: {exc}")
    if not records:
        raise InputError(f"{path} has no jobs", "one job per row (a CSV needs a header line: video,audio,output)")
    rows = [_row(i + 1, record, path.parent, version) for i, record in enumerate(records)]
    seen: dict[str, int] = {}
    for row in rows:
        if row.problem is None and row.output in seen:
            row.problem = f"output name {row.output!r} is also used by row {seen[row.output]}"
        seen.setdefault(row.output, row.number)
    return rows


def _row(number: int, record: Any, base: Path, version: str) -> Row:
    row = Row(number, output=f"row{number}.mp4")
    try:
        if not isinstance(record, dict):
            raise InputError(record if isinstance(record, str) else "a row must be an object of fields")
        unknown = sorted(set(record) - KNOWN_FIELDS - {None})
        if unknown:
            raise InputError(f"unknown field(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(KNOWN_FIELDS))}")
        values = {k: (v.strip() if isinstance(v, str) else v) for k, v in record.items() if k is not None}
        values = {k: v for k, v in values.items() if v not in ("", None)}
        for name in ("video", "audio"):
            if name not in values:
                raise InputError(f"the row has no {name}")
            setattr(row, name, base / str(values[name]))
        output = str(values.get("output", f"row{number}_{row.video.stem}.mp4"))
        if Path(output).name != output or output.startswith(".") or Path(output).suffix.lower() not in OUTPUT_SUFFIXES:
            raise InputError(f"output {output!r} must be a plain file name ending in {', '.join(OUTPUT_SUFFIXES)}")
        row.output = output
        numbers = {}
        for name, kind in NUMBER_FIELDS.items():
            if name in values:
                try:
                    numbers[name] = kind(values[name]) if kind is float else _whole(values[name])
                except (TypeError, ValueError):
                    raise InputError(f"{name} must be a {'' if kind is float else 'whole '}number, got {values[name]!r}") from None
        row.settings = job_settings(version=str(values.get("version", version)), versions=(version,), **numbers)
    except InputError as exc:
        row.problem = str(exc)
    return row


def _whole(value: Any) -> int:
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


class RowRunner:
    """Runs rows with one loaded pipeline (the local engine has one, the Ray engine one per actor)."""

    def __init__(self, load: Callable[[], LipSyncPipeline]):
        self.pipe = load()

    def run(self, row: Row, output_dir: str) -> dict[str, Any]:
        out_dir = Path(output_dir)
        write_status(out_dir, row, {"state": "running"})
        try:
            job = check_inputs(row.video, row.audio, out_dir / row.output, run_options(row.settings))
            report = self.pipe(job).report.to_dict()
            status = {"state": "succeeded", "report": report}
        except LatentSyncError as exc:
            status = {"state": "failed", "error": exc.message, "hint": exc.hint}
        except Exception as exc:
            log.exception("row %d failed", row.number)
            status = {"state": "failed", "error": f"internal error: {type(exc).__name__}: {exc}"}
        return write_status(out_dir, row, status)


def status_path(out_dir: Path, row: Row) -> Path:
    return out_dir / f"{row.output}.status.json"


def write_status(out_dir: Path, row: Row, status: dict[str, Any]) -> dict[str, Any]:
    status = {"row": row.number, "output": row.output, **status, "inputs": row.fingerprint()}
    with atomic_path(status_path(out_dir, row)) as tmp:
        tmp.write_text(json.dumps(status, indent=1))
    return status


def read_status(out_dir: Path, row: Row) -> dict[str, Any] | None:
    try:
        return json.loads(status_path(out_dir, row).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def finished(out_dir: Path, row: Row, retry_failed: bool) -> bool:
    """Whether an earlier run finished this row (a failure counts when nothing about the row changed)."""
    status = read_status(out_dir, row)
    if status is None:
        return False
    if status.get("state") == "succeeded":
        return (out_dir / row.output).exists()
    same = json.loads(json.dumps(row.fingerprint())) == status.get("inputs")
    return status.get("state") == "failed" and same and not retry_failed


def plan(rows: list[Row], out_dir: Path, retry_failed: bool) -> tuple[list[Row], list[Row], list[Row]]:
    """Split the rows into (already finished, failed now without model work, to run); statuses written."""
    done, failed, todo = [], [], []
    for row in rows:
        if row.problem is None and finished(out_dir, row, retry_failed):
            done.append(row)
            continue
        if row.problem is None:
            try:
                check_inputs(row.video, row.audio, out_dir / row.output, run_options(row.settings))
            except LatentSyncError as exc:
                row.problem = str(exc)
        if row.problem is not None:
            if not finished(out_dir, row, retry_failed):
                write_status(out_dir, row, {"state": "failed", "error": row.problem})
            failed.append(row)
        else:
            todo.append(row)
    return done, failed, todo


def run_local(rows: Iterable[Row], out_dir: Path, load: Callable[[], LipSyncPipeline]) -> list[dict[str, Any]]:
    """Run rows one after the other with one pipeline."""
    runner = None
    statuses = []
    for row in rows:
        runner = runner or RowRunner(load)
        status = runner.run(row, str(out_dir))
        _log_row(row, status)
        statuses.append(status)
    return statuses


def run_ray(rows: list[Row], out_dir: Path, load: Callable[[], LipSyncPipeline], address: str | None,
            workers: int | None) -> list[dict[str, Any]]:
    """Run rows on a Ray cluster: one actor per GPU (or `workers` CPU actors on a cluster without GPUs)."""
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as exc:
        raise InputError("--engine ray needs Ray", "pip install 'latentsync[cluster]'") from exc
    if not rows:
        return []
    out_dir = out_dir.resolve()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = min(len(rows), workers or gpus or 1)
    actor = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1)(RowRunner)
    pool = ActorPool([actor.remote(load) for _ in range(count)])
    log.info("running %d rows on %d Ray actor(s) (%s)", len(rows), count, "one GPU each" if gpus else "CPU")
    by_number = {row.number: row for row in rows}
    statuses = []
    for status in pool.map_unordered(lambda a, row: a.run.remote(row, str(out_dir)), rows):
        _log_row(by_number[status["row"]], status)
        statuses.append(status)
    return statuses


def _log_row(row: Row, status: dict[str, Any]) -> None:
    if status["state"] == "succeeded":
        log.info("row %d: wrote %s", row.number, row.output)
    else:
        log.error("row %d failed: %s", row.number, status.get("error"))
