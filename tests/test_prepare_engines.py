"""`latentsync prepare` killed with SIGKILL part-way and run again gives what an uninterrupted run gives, without
doing any finished work twice; `--engine ray` gives the same manifest and clips as the local process pool."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import psnr
from prepare_inputs import make_inputs
from latentsync.audio import load_audio
from latentsync.media import read_frames
from latentsync.data.prepare import PrepareSettings, prepare_dataset

SETTINGS = PrepareSettings(64, min_seconds=1.0, max_seconds=2.0, face_backend="mediapipe", skip=("sync", "quality"))
CLI_OPTIONS = ["--resolution", "64", "--min-seconds", "1", "--max-seconds", "2", "--face-backend", "mediapipe",
               "--skip", "sync,quality", "--quiet"]
TABLES = {  # everything but the number of the run that computed a step
    "steps": "item, step, key, status, result, reason, detail",
    "videos": "*",
    "clips": "*",
}


def manifest(out, with_runs: bool = False) -> dict[str, list]:
    with sqlite3.connect(out / "manifest.sqlite") as db:
        tables = {name: sorted(db.execute(f"SELECT {cols} FROM {name}").fetchall(), key=repr) for name, cols in TABLES.items()}
        if with_runs:
            tables["runs"] = {(i, s): r for i, s, r in db.execute("SELECT item, step, run FROM steps")}
    return tables


def published_count(out) -> int:
    """Clips recorded as published so far by a running prepare (0 before its manifest has tables)."""
    if not (out / "manifest.sqlite").exists():
        return 0
    try:
        with sqlite3.connect(out / "manifest.sqlite", timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM steps WHERE step = 'publish'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def same_files(a, b) -> None:
    """The same kept clips. Their bytes are equal in nearly every run; H.264 encoding under heavy CPU contention was
    seen to differ in rare runs (decoded frames a few grey levels apart), so a byte difference must still decode to
    the same audio samples and near-identical frames."""
    names = sorted((a / "fileslist.txt").read_text().splitlines())
    assert names and names == sorted((b / "fileslist.txt").read_text().splitlines())
    for name in names:
        if filecmp.cmp(a / name, b / name, shallow=False):
            continue
        assert np.array_equal(load_audio(a / name), load_audio(b / name)), name
        frames = [np.stack([f for _, f in read_frames(folder / name)]) for folder in (a, b)]
        assert frames[0].shape == frames[1].shape and psnr(*frames) > 35, name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    inputs = make_inputs(root / "raw")
    prepare_dataset(inputs, root / "local", SETTINGS, workers=2, progress=False)
    return inputs, root / "local"


def test_sigkill_part_way_then_rerun_equals_an_uninterrupted_run(uninterrupted, tmp_path):
    inputs, reference = uninterrupted
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "latentsync.cli", "prepare", str(inputs), str(out), "--workers", "1", *CLI_OPTIONS]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:  # kill once the first clip is recorded
            if published_count(out):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker processes
        proc.wait(timeout=30)
    assert not (out / "fileslist.txt").exists()  # nothing is listed before the run ends
    before = manifest(out, with_runs=True)["runs"]
    with sqlite3.connect(out / "manifest.sqlite") as db:
        published = [json.loads(r)["path"] for (r,) in db.execute("SELECT result FROM steps WHERE step = 'publish'")]
    assert 1 <= len(published) < 3  # part-way: 3 clips in all
    kept_before = {out / p: (out / p).stat().st_mtime_ns for p in published}

    report = prepare_dataset(inputs, out, SETTINGS, workers=2, progress=False)
    after = manifest(out, with_runs=True)
    assert {k: v for k, v in after.pop("runs").items() if k in before} == before  # nothing done twice
    assert after == manifest(reference)
    same_files(out, reference)
    assert all(p.stat().st_mtime_ns == t for p, t in kept_before.items())
    assert report.computed.get("publish", 0) == 3 - len(published)
    leftovers = [p for p in out.rglob(".*") if p.is_file() and p.name != ".prepare.lock"]  # the lock stays
    assert not leftovers  # no temporary file of the killed run is left behind


def test_ray_engine_gives_the_local_manifest_and_clips(uninterrupted, tmp_path):
    pytest.importorskip("ray")
    inputs, reference = uninterrupted
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "latentsync.cli", "prepare", str(inputs), str(out), "--engine", "ray",
           "--workers", "2", *CLI_OPTIONS]
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ray: 2 CPUs" in done.stderr
    assert manifest(out) == manifest(reference)
    same_files(out, reference)
