"""The persistent queue: a server killed with SIGKILL mid-job restarts on the same data folder without losing or
repeating work; the store's recovery and expiry rules on their own."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import MEDIA
from latentsync.cli.serve_cmds import exposure_warning, is_local
from latentsync.serve.store import JobStore
from serve_helpers import STEPS, Server, submit, tiny_models, wait_for, write_speech

VIDEO = MEDIA / "demo2_360p.mp4"


def test_sigkill_during_a_job_then_restart(tmp_path_factory, tmp_path):
    models = tiny_models(tmp_path_factory)
    data = tmp_path / "data"
    long_speech = write_speech(tmp_path / "long.wav", 1.2)
    short_speech = write_speech(tmp_path / "short.wav", 0.5, "demo2_speech.flac")
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with Server(data, models, log=logs[0]) as first, first.client() as client:
        killed = submit(client, VIDEO, long_speech, steps="3", seed=1).json()["id"]
        queued = [submit(client, VIDEO, short_speech, steps=STEPS, seed=2).json()["id"]]
        deadline = time.monotonic() + 90
        while client.get(f"/v1/jobs/{killed}").json()["stage"] != "lip-sync":  # killed mid-way through writing
            assert time.monotonic() < deadline, first.log_text()
            time.sleep(0.1)
        first.kill()
    job_dir = data / "jobs" / killed
    assert any(p.name.startswith(".") for p in job_dir.iterdir())  # the unfinished output the dead run left

    with Server(data, models, log=logs[1]) as second, second.client() as client:
        retried = wait_for(client, killed, ("succeeded", "failed"), timeout=120)
        assert retried["state"] == "succeeded" and retried["attempts"] == 2, retried
        for job_id in queued:
            job = wait_for(client, job_id, ("succeeded", "failed"), timeout=90)
            assert job["state"] == "succeeded" and job["attempts"] == 1, job
            assert client.get(f"/v1/jobs/{job_id}/result").status_code == 200
        assert len(client.get("/v1/jobs").json()["jobs"]) == 2  # nothing lost, nothing added
    assert sorted(p.name for p in job_dir.iterdir()) == ["audio.wav", "result.mp4", "video.mp4"]  # leftover removed
    text = "".join(log.read_text() for log in logs)
    for job_id in (killed, *queued):
        assert text.count(f"job {job_id} succeeded") == 1, text[-3000:]  # run to completion once
    assert text.count(f"job {killed} started") == 2


def _queued_job(store: JobStore, tmp_path: Path, name: str):
    incoming = store.new_incoming()
    (incoming / "video.mp4").write_bytes(b"v")
    (incoming / "audio.wav").write_bytes(b"a")
    return store.add(incoming, "video.mp4", "audio.wav", {"steps": 2}, name, name)


def test_recovery_retries_once_then_fails_with_the_reason(tmp_path):
    store = JobStore(tmp_path / "data")
    job = _queued_job(store, tmp_path, "a")
    waiting = _queued_job(store, tmp_path, "b")
    assert store.claim().id == job.id  # the oldest first
    assert store.recover() == [job.id]  # the server died: retried
    again = store.get(job.id)
    assert again.state == "queued" and again.attempts == 1 and "retrying once" in again.error
    assert store.claim().id == job.id and store.get(job.id).attempts == 2
    store = JobStore(tmp_path / "data")  # died again, a new process opens the folder
    store.recover()
    failed = store.get(job.id)
    assert failed.state == "failed" and "stopped while this job was running, 2 times" in failed.error
    assert store.get(waiting.id).state == "queued" and store.claim().id == waiting.id
    # A run that had written its result just before dying counts as done, not run again.
    store.result_path(waiting.id).write_bytes(b"mp4")
    store.recover()
    assert store.get(waiting.id).state == "succeeded" and store.get(waiting.id).attempts == 1
    # Uploads of a request that never queued its job are removed.
    orphan = store.jobs_dir / ("0" * 32)
    orphan.mkdir()
    store.new_incoming()
    store.recover()
    assert not orphan.exists() and list(store.incoming_dir.iterdir()) == []


def test_finished_jobs_expire_with_their_files(tmp_path):
    store = JobStore(tmp_path / "data")
    old, recent, running = (_queued_job(store, tmp_path, n) for n in ("old", "recent", "running"))
    for job in (old, recent, running):
        assert store.claim().id == job.id
    store.finish(old.id, "succeeded", report={"seed": 1})
    store.finish(recent.id, "failed", error="no face")
    with store._transaction() as db:  # finished two hours ago
        db.execute("UPDATE jobs SET finished = finished - 7200 WHERE id = ?", (old.id,))
    assert store.expire(3600) == [old.id]
    assert store.get(old.id) is None and not store.job_dir(old.id).exists()
    assert store.get(recent.id).state == "failed" and store.get(running.id).state == "running"
    assert json.loads(json.dumps(store.get(recent.id).public()))["error"] == "no face"


def test_serving_beyond_localhost_without_a_token_is_warned_about():
    assert all(is_local(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(is_local(h) for h in ("0.0.0.0", "192.168.1.4", "::", "example.org"))
    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("0.0.0.0", "s3cret") is None
    assert "0.0.0.0 without a token" in exposure_warning("0.0.0.0", None)
    assert "LATENTSYNC_TOKEN" in exposure_warning("10.0.0.5", "")
