"""`latentsync batch`: rows of a jobs file run with the models loaded once; a broken row is reported and the
others go on; a re-run skips what finished."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest

from conftest import MEDIA
from latentsync.cli import main, serve_cmds
from latentsync.errors import InputError
from latentsync.serve.batch import read_jobs
from serve_helpers import model_args, probe_mp4, tiny_models, write_speech


def probe_frames(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture
def count_loads(monkeypatch) -> list[int]:
    loads = []
    real = serve_cmds.load_pipeline

    def counting(*args, **kwargs):
        loads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(serve_cmds, "load_pipeline", counting)
    return loads


def test_three_rows_one_broken_then_a_rerun_does_nothing(tmp_path_factory, tmp_path, capsys, count_loads, one_thread):
    models = tiny_models(tmp_path_factory)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_speech(inputs / "hello.wav", 0.5)
    write_speech(inputs / "bye.wav", 0.6, "demo3_speech.flac")
    (inputs / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 but nothing else")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "video,audio,output,steps,seed\n"
        f"{MEDIA / 'demo1_360p.mp4'},inputs/hello.wav,first.mp4,2,1\n"
        "inputs/broken.mp4,inputs/hello.wav,second.mp4,2,1\n"
        f"{MEDIA / 'demo3_360p.mp4'},inputs/bye.wav,third.mp4,2,\n"
    )
    out = tmp_path / "out"
    command = ["batch", str(jobs), "--output-dir", str(out), *model_args(models)]
    assert main(command) == 2  # a failed row makes the command fail, after the others ran
    err = capsys.readouterr().err
    assert "batch: 2 written, 0 skipped (finished before), 1 failed" in err and "row(s) 2 failed" in err
    assert count_loads == [1]  # the models, once for all rows
    statuses = {row: json.loads((out / f"{name}.status.json").read_text())
                for row, name in ((1, "first.mp4"), (2, "second.mp4"), (3, "third.mp4"))}
    assert [statuses[r]["state"] for r in (1, 2, 3)] == ["succeeded", "failed", "succeeded"]
    assert "broken.mp4" in statuses[2]["error"] and "video" in statuses[2]["error"]
    assert statuses[1]["report"]["seed"] == 1 and statuses[3]["report"]["output_frames"] == 15
    assert sorted(p.name for p in out.iterdir()) == [
        "first.mp4", "first.mp4.status.json", "second.mp4.status.json", "third.mp4", "third.mp4.status.json"]
    for name, frames, seconds in (("first.mp4", 12, 0.5), ("third.mp4", 15, 0.6)):
        info = probe_mp4(out / name)
        assert (info["width"], info["height"], info["fps"], info["frames"]) == (360, 640, 25.0, frames)
        assert abs(info["audio_seconds"] - seconds) <= 0.04
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    assert main(command) == 2  # the broken row is still reported...
    err = capsys.readouterr().err
    assert "3 rows: 2 finished before, 1 failed checks, 0 to run" in err
    assert count_loads == [1]  # ...but nothing is loaded or run again
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    # Fixing the broken row runs that row only.
    (inputs / "broken.mp4").write_bytes((MEDIA / "demo2_360p.mp4").read_bytes())
    assert main(command) == 0
    assert "1 to run" in capsys.readouterr().err
    assert json.loads((out / "second.mp4.status.json").read_text())["state"] == "succeeded"
    assert (out / "first.mp4").stat().st_mtime_ns == before["first.mp4"]


def test_jobs_files_are_read_row_by_row(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    rows = [
        {"video": "a.mp4", "audio": "a.wav", "output": "a.mp4", "guidance": 2.0, "face_x": 10, "face_y": 20},
        "not json",
        {"video": "b.mp4", "audio": "b.wav", "output": "../escape.mp4"},
        {"video": "c.mp4", "audio": "c.wav", "steps": "2.5"},
        {"video": "d.mp4", "audio": "d.wav", "output": "a.mp4"},
        {"video": "e.mp4"},
        {"video": "f.mp4", "audio": "f.wav", "colour": "red"},
        {"video": "g.mp4", "audio": "g.wav", "steps": 0},
    ]
    jobs.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n\n")
    parsed = read_jobs(jobs, "1.5")
    assert [r.number for r in parsed] == list(range(1, 9))
    first = parsed[0]
    assert first.problem is None and first.video == tmp_path / "a.mp4" and first.output == "a.mp4"
    assert first.settings == {"steps": 20, "guidance": 2.0, "seed": None, "version": "1.5", "face_point": [10.0, 20.0],
                              "face_index": None}
    problems = [r.problem or "" for r in parsed[1:]]
    for problem, needle in zip(problems, ["not a JSON object", "plain file name", "steps must be a whole number",
                                          "also used by row 1", "no audio", "unknown field(s) colour",
                                          "denoising steps"]):
        assert needle in problem, (needle, problem)
    assert parsed[3].output == "row4_c.mp4"
    other = tmp_path / "jobs.txt"
    other.write_text("video,audio\n")
    with pytest.raises(InputError, match="a jobs file is .csv or .jsonl"):
        read_jobs(other, "1.5")



@pytest.mark.slow
def test_ray_engine_writes_the_same_outputs(tmp_path_factory, tmp_path, capsys):
    """Rows spread over Ray actors (a local cluster of CPU actors here) give the files the local engine gives."""
    models = tiny_models(tmp_path_factory)
    write_speech(tmp_path / "hello.wav", 0.5)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(json.dumps(row) for row in [
        {"video": str(MEDIA / "demo1_360p.mp4"), "audio": "hello.wav", "output": "a.mp4", "steps": 2, "seed": 5},
        {"video": str(MEDIA / "demo2_360p.mp4"), "audio": "hello.wav", "output": "b.mp4", "steps": 2, "seed": 6},
        {"video": "missing.mp4", "audio": "hello.wav", "output": "c.mp4"},
    ]))
    outputs = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        extra = ["--ray-workers", "2"] if engine == "ray" else []
        env = {"OMP_NUM_THREADS": "1"}
        run = subprocess.run([sys.executable, "-m", "latentsync.cli", "batch", str(jobs), "--output-dir", str(out),
                              "--engine", engine, *extra, *model_args(models)],
                             capture_output=True, text=True, timeout=300, env={**os.environ, **env})
        assert run.returncode == 2 and "batch: 2 written, 0 skipped (finished before), 1 failed" in run.stderr, run.stderr
        outputs[engine] = {name: probe_frames(out / name) for name in ("a.mp4", "b.mp4")}
        assert json.loads((out / "c.mp4.status.json").read_text())["state"] == "failed"
    for name in ("a.mp4", "b.mp4"):
        np.testing.assert_array_equal(outputs["local"][name], outputs["ray"][name])
