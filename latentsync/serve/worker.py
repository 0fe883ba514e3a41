"""Model workers: one thread per device keeps a pipeline loaded and runs queued jobs one after the other.

A job's progress goes to the store as the pipeline reports it; a cancel request is noticed there and stops the
job (the pipeline writes no output then). A finished result is removed again by the janitor once it expires.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any, Callable

from ..errors import LatentSyncError
from ..pipeline import LipSyncPipeline, check_inputs
from .store import Job, JobCancelled, JobStore
from .uploads import run_options

log = logging.getLogger(__name__)

# load(version, device) -> a pipeline with that version's models on that device
PipelineLoader = Callable[[str, str], LipSyncPipeline]
IDLE_POLL_SECONDS = 2.0  # how often an idle worker looks at the queue without being woken
EXPIRY_CHECK_SECONDS = 60.0
PROGRESS_SECONDS = 0.5  # a cancel is noticed within this time (or at the next stage)


class Worker(threading.Thread):
    """Runs jobs from the store on one device, with the models of one version loaded at a time."""

    def __init__(self, store: JobStore, load: PipelineLoader, device: str, version: str, stop: threading.Event):
        super().__init__(name=f"latentsync-worker-{device}", daemon=True)
        self.store, self.load, self.device, self.stop = store, load, device, stop
        self.version = version
        self.pipe: LipSyncPipeline | None = None
        self.error: str | None = None  # why the models could not be loaded
        self.current: str | None = None  # the id of the job running now

    @property
    def ready(self) -> bool:
        return self.pipe is not None

    def run(self) -> None:
        try:
            self.pipe = self.load(self.version, self.device)
            log.info("models of LatentSync %s loaded on %s", self.version, self.device)
        except Exception as exc:  # shown by /readyz; the jobs stay queued for a fixed restart
            self.error = str(exc)
            log.error("cannot load the models on %s: %s", self.device, exc)
            return
        while not self.stop.is_set():
            job = self.store.claim()
            if job is None:
                self.store.wait(IDLE_POLL_SECONDS)
                continue
            self.current = job.id
            self.run_job(job)
            self.current = None

    def run_job(self, job: Job) -> None:
        log.info("job %s started on %s (attempt %d)", job.id, self.device, job.attempts)
        folder = self.store.job_dir(job.id)
        state, error, report = "failed", None, None
        try:
            pipe = self.pipeline(job.settings["version"])
            options = run_options(job.settings, ProgressReporter(self.store, job.id))
            checked = check_inputs(folder / job.video_file, folder / job.audio_file, self.store.result_path(job.id), options)
            report = pipe(checked).report.to_dict()
            report["output"] = self.store.result_path(job.id).name  # no server paths in the API
            state = "succeeded"
        except JobCancelled:
            state, error = "cancelled", "cancelled while running"
        except LatentSyncError as exc:
            error = str(exc)
        except Exception as exc:
            log.exception("job %s failed", job.id)
            error = f"internal error: {type(exc).__name__}: {exc}"
        current = self.store.get(job.id)
        if state == "succeeded" and current is not None and current.cancel:  # cancelled as the last frames were written
            self.store.result_path(job.id).unlink(missing_ok=True)
            state, error, report = "cancelled", "cancelled while running", None
        if current is not None:
            self.store.finish(job.id, state, error, report)
        log.info("job %s %s%s", job.id, state, f": {error}" if error else "")

    def pipeline(self, version: str) -> LipSyncPipeline:
        """The loaded pipeline, after swapping in another version's models if the job asks for one."""
        if self.pipe is None or version != self.version:
            self.pipe = None  # one version's models at a time
            gc.collect()
            _empty_cuda_cache()
            self.pipe, self.version = self.load(version, self.device), version
        return self.pipe


class ProgressReporter:
    """The pipeline's progress callback for one job: records the stage in the store (a new stage or the end of
    one at once, otherwise at most every PROGRESS_SECONDS), and stops the job there when it was cancelled."""

    def __init__(self, store: JobStore, job_id: str):
        self.store, self.job_id = store, job_id
        self.stage, self.last = None, 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != self.stage or done >= total or now - self.last >= PROGRESS_SECONDS:
            self.stage, self.last = stage, now
            self.store.set_progress(self.job_id, stage, done, total)


class WorkerPool:
    """The workers (one per device) and the janitor that removes expired jobs."""

    def __init__(self, store: JobStore, load: PipelineLoader, devices: list[str], version: str, keep_seconds: float):
        self.store, self.keep_seconds = store, keep_seconds
        self.stop = threading.Event()
        self.workers = [Worker(store, load, device, version, self.stop) for device in devices]
        self.janitor = threading.Thread(target=self._expire_loop, name="latentsync-janitor", daemon=True)

    def start(self) -> None:
        for worker in self.workers:
            worker.start()
        self.janitor.start()

    def shutdown(self) -> None:
        """Stop taking jobs; a job cut short by a clean stop is queued again, its attempt not counted."""
        self.stop.set()
        self.store.notify()
        for worker in self.workers:
            if worker.current is not None:
                self.store.release(worker.current)

    def status(self) -> dict[str, Any]:
        return {
            "ready": all(w.ready for w in self.workers),
            "workers": [{"device": w.device, "version": w.version, "ready": w.ready, "error": w.error}
                        for w in self.workers],
        }

    def _expire_loop(self) -> None:
        while not self.stop.is_set():
            expired = self.store.expire(self.keep_seconds)
            if expired:
                log.info("removed %d expired jobs", len(expired))
            self.stop.wait(min(EXPIRY_CHECK_SECONDS, self.keep_seconds))


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
