"""The model worker's rules without running models: version swaps, progress records, cancel, clean stops."""

from __future__ import annotations

import threading

import pytest

from latentsync.serve.store import JobCancelled, JobStore
from latentsync.serve.worker import ProgressReporter, Worker, WorkerPool


def queued_job(store: JobStore, version: str = "1.5"):
    incoming = store.new_incoming()
    (incoming / "video.mp4").write_bytes(b"v")
    (incoming / "audio.wav").write_bytes(b"a")
    return store.add(incoming, "video.mp4", "audio.wav", {"steps": 2, "version": version})


def test_a_worker_keeps_one_version_loaded_and_swaps_on_demand(tmp_path):
    loads = []

    def load(version, device):
        loads.append((version, device))
        return f"pipeline {version}"

    worker = Worker(JobStore(tmp_path), load, "cuda:1", "1.5", threading.Event())
    assert worker.pipeline("1.5") == "pipeline 1.5" and worker.pipeline("1.5") == "pipeline 1.5"
    assert worker.pipeline("1.6") == "pipeline 1.6" and worker.version == "1.6"
    assert loads == [("1.5", "cuda:1"), ("1.6", "cuda:1")]  # loaded once each, on the worker's device


def test_progress_is_recorded_per_stage_and_a_cancel_stops_the_job(tmp_path):
    store = JobStore(tmp_path)
    job = queued_job(store)
    store.claim()
    report = ProgressReporter(store, job.id)
    report("faces", 1, 50)
    assert (store.get(job.id).stage, store.get(job.id).progress) == ("faces", pytest.approx(0.1 + 0.2 / 50))
    report("faces", 2, 50)  # within half a second of the last record: not written
    assert store.get(job.id).progress == pytest.approx(0.1 + 0.2 / 50)
    report("faces", 50, 50)  # the end of a stage always is
    assert store.get(job.id).progress == pytest.approx(0.3)
    assert store.cancel_or_remove(job.id) == "cancelling"
    with pytest.raises(JobCancelled):
        report("lip-sync", 0, 4)


def test_a_clean_stop_requeues_the_running_job_without_counting_it(tmp_path):
    store = JobStore(tmp_path)
    job = queued_job(store)
    pool = WorkerPool(store, lambda version, device: None, ["cpu"], "1.5", keep_seconds=3600)
    assert store.claim().attempts == 1
    pool.workers[0].current = job.id  # as the worker thread sets it while running the job
    pool.shutdown()
    again = store.get(job.id)
    assert again.state == "queued" and again.attempts == 0 and again.progress == 0
