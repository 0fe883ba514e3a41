"""Helpers of the serving tests: tiny models written once per session, short speech clips, and a real
`latentsync serve` process on a free 127.0.0.1 port that is always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import numpy as np

from conftest import AUDIO
from latentsync.audio import SAMPLE_RATE, load_audio, save_wav
from latentsync.testing import write_random_models

STEPS = "2"


def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """The tiny random-weight models, written once per test session (shared by the serving test modules)."""
    folder = tmp_path_factory.getbasetemp() / "serve-tiny-models"
    done = folder / "done"
    if not done.exists():
        paths = write_random_models(folder, "tiny")
        done.write_text("\n".join(f"{k}={v}" for k, v in paths.items()))
    return {k: Path(v) for k, v in (line.split("=", 1) for line in done.read_text().splitlines())}


def model_args(models: dict[str, Path]) -> list[str]:
    return ["--version", "1.5", "--offline", "--face-backend", "mediapipe", "--device", "cpu",
            "--unet-config", str(models["unet_config"]), "--unet-checkpoint", str(models["unet"]),
            "--vae", str(models["vae"]), "--whisper", str(models["whisper"])]


def write_speech(path: Path, seconds: float, source: str = "demo1_speech.flac") -> Path:
    """The first `seconds` of a real speech track, as a 16 kHz wav."""
    return save_wav(path, load_audio(AUDIO / source)[: int(seconds * SAMPLE_RATE)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_thread_env(**extra: str) -> dict[str, str]:
    """The environment of a server under test: one torch thread (tiny models run faster so on a shared CPU)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


class Server:
    """`python -m latentsync.cli serve ...` as a subprocess; use as a context manager (always stopped)."""

    def __init__(self, data_dir: Path, models: dict[str, Path], *extra: str, token: str | None = None,
                 log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.log = log or data_dir.parent / f"server-{self.port}.log"
        env = one_thread_env()
        env.pop("LATENTSYNC_TOKEN", None)
        if token:  # given the documented way, through the environment
            env["LATENTSYNC_TOKEN"] = token
        self.args = [sys.executable, "-m", "latentsync.cli", "serve", *model_args(models), "--host", "127.0.0.1",
                     "--port", str(self.port), "--data-dir", str(data_dir), *extra]
        self.env = env
        self.process: subprocess.Popen | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=60, **kwargs)

    def __enter__(self) -> "Server":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def wait_ready(self, timeout: float = 150) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                if httpx.get(self.url + "/readyz", headers=self.headers, timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the server was not ready within {timeout} s:\n{self.log_text()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a machine loses power."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def submit(client: httpx.Client, video: Path, audio: Path, **fields) -> httpx.Response:
    with open(video, "rb") as v, open(audio, "rb") as a:
        return client.post("/v1/jobs", files={"video": (video.name, v, "video/mp4"), "audio": (audio.name, a, "audio/wav")},
                           data={k: str(val) for k, val in fields.items()})


def wait_for(client: httpx.Client, job_id: str, states: tuple[str, ...], timeout: float = 120) -> dict:
    """Poll a job until it is in one of `states`; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    job = {}
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} still {job.get('state')} after {timeout} s: {job}")


def probe_mp4(path: Path) -> dict:
    """Size, frame rate, frame count and audio duration of a video file (decoding every frame)."""
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        info = {"width": v.width, "height": v.height, "fps": float(v.average_rate),
                "audio_seconds": float(a.duration * a.time_base), "format": c.format.name}
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    info["frames"] = len(frames)
    info["mean"] = float(np.mean(frames))
    return info
