"""`latentsync serve` (web page + HTTP API + persistent queue) and `latentsync batch` (a file of jobs)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from functools import partial
from pathlib import Path

from .. import weights
from ..errors import InputError
from ..face.detectors import BACKENDS
from .infer import add_model_options, load_pipeline

log = logging.getLogger(__name__)

TOKEN_ENV = "LATENTSYNC_TOKEN"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="web page and HTTP API with a persistent job queue (one model worker per GPU)")
    add_serving_model_options(p)
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)")
    s.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    s.add_argument("--data-dir", default="latentsync_data",
                   help="jobs, uploads and results, with their SQLite index (default: %(default)s)")
    s.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                   help=f"API token every request must carry (Authorization: Bearer TOKEN; default: ${TOKEN_ENV})")
    s.add_argument("--max-upload-mb", type=float, default=200, help="largest video or audio upload (default: %(default)s)")
    s.add_argument("--max-seconds", type=float, default=600,
                   help="longest video or speech accepted, in seconds (default: %(default)s)")
    s.add_argument("--keep-hours", type=float, default=24,
                   help="finished jobs and their results are removed after this time (default: %(default)s)")
    s.add_argument("--no-web", action="store_true", help="the HTTP API only, without the web page")
    p.set_defaults(run=run_serve)

    p = sub.add_parser("batch", help="lip-sync the rows of a CSV or JSONL jobs file, the models loaded once")
    p.add_argument("jobs", help="jobs file: .csv with a header line, or .jsonl; fields video, audio, output, steps, "
                                "guidance, seed, face_x, face_y, face_index (paths relative to the file)")
    p.add_argument("--output-dir", required=True, help="where the outputs and their .status.json files go")
    p.add_argument("--retry-failed", action="store_true", help="run rows again that failed with unchanged inputs")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process; ray: one actor per GPU of a Ray cluster (default: %(default)s)")
    p.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local one)")
    p.add_argument("--ray-workers", type=int, help="actors on a cluster without GPUs (default: 1)")
    add_serving_model_options(p)
    p.set_defaults(run=run_batch)


def add_serving_model_options(p: argparse.ArgumentParser) -> None:
    """The model options of `infer`, plus the face detector."""
    m = add_model_options(p)
    m.add_argument("--face-backend", default="auto", choices=BACKENDS,
                   help="face detector (auto: insightface when its weights are present, else mediapipe)")


def served_versions(args: argparse.Namespace) -> tuple[str, ...]:
    """--version first; the other published versions too, unless a model part was given by path (it belongs to
    one version)."""
    if any((args.unet_config, args.unet_checkpoint, args.vae, args.whisper)):
        return (args.version,)
    return (args.version, *sorted(v for v in weights.VERSIONS if v != args.version))


def worker_devices(device: str) -> list[str]:
    """One worker per GPU: every visible GPU for "auto", else the devices listed (cuda:0,cuda:1 or cpu)."""
    if device == "auto":
        import torch

        count = torch.cuda.device_count()
        return [f"cuda:{i}" for i in range(count)] if count else ["cpu"]
    return [d.strip() for d in device.split(",") if d.strip()]


def is_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, token: str | None) -> str | None:
    """What to tell someone who serves beyond this machine without a token (None when that is not the case)."""
    if is_local(host) or token:
        return None
    return (f"listening on {host} without a token: anyone who can reach this machine can submit jobs and read "
            f"results; set --token or ${TOKEN_ENV}")


def run_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from ..serve.app import ServerConfig, create_app
    from ..serve.store import JobStore
    from ..serve.uploads import Limits
    from ..serve.worker import WorkerPool

    if args.max_upload_mb <= 0 or args.max_seconds <= 0 or args.keep_hours <= 0:
        raise InputError("--max-upload-mb, --max-seconds and --keep-hours must be positive")
    warning = exposure_warning(args.host, args.token)
    if warning:
        print(f"latentsync: warning: {warning}", file=sys.stderr)
    devices = worker_devices(args.device)
    store = JobStore(Path(args.data_dir))
    requeued = store.recover()
    if requeued:
        log.info("%d job(s) were running when the server stopped; see their state", len(requeued))
    config = ServerConfig(
        token=args.token or None,
        limits=Limits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_seconds=args.max_seconds),
        versions=served_versions(args),
        face_backend=args.face_backend,
        checkpoint_dir=args.checkpoint_dir,
        web=not args.no_web,
    )
    pool = WorkerPool(store, lambda version, device: load_pipeline(args, version, device), devices, args.version,
                      keep_seconds=args.keep_hours * 3600)
    app = create_app(config, store, pool)
    pool.start()
    print(f"latentsync: serving on http://{args.host}:{args.port} (data in {store.root}, workers on "
          f"{', '.join(devices)})", file=sys.stderr, flush=True)
    try:
        # Open page connections (the page polls) get 5 s to end, so a stop never hangs on a browser tab.
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        pool.shutdown()


def run_batch(args: argparse.Namespace) -> None:
    from ..serve import batch

    rows = batch.read_jobs(args.jobs, args.version)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done, failed, todo = batch.plan(rows, out_dir, args.retry_failed)
    print(f"{len(rows)} rows: {len(done)} finished before, {len(failed)} failed checks, {len(todo)} to run",
          file=sys.stderr)
    load = partial(load_pipeline, args)
    if args.engine == "ray":
        statuses = batch.run_ray(todo, out_dir, load, args.ray_address, args.ray_workers)
    else:
        statuses = batch.run_local(todo, out_dir, load)
    succeeded = sum(s["state"] == "succeeded" for s in statuses)
    failed_rows = [row.number for row in rows if (batch.read_status(out_dir, row) or {}).get("state") != "succeeded"]
    print(f"batch: {succeeded} written, {len(done)} skipped (finished before), {len(failed_rows)} failed", file=sys.stderr)
    if failed_rows:
        raise InputError(f"row(s) {', '.join(map(str, sorted(failed_rows)))} failed",
                         f"see the .status.json files in {out_dir}; fix the rows and run again")
