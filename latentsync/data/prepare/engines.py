"""Where the steps run: a process pool on this machine (`local`), or Ray tasks on a cluster (`ray`).

Both hand out `concurrent.futures.Future`s of `steps.run_task`, so the runner and the manifest are the same for
both. Model steps (SyncNet, HyperIQA) go to the GPU when there is one: locally to one process that holds the models
on it, beside the pool that runs the CPU steps; on Ray to tasks that ask for a GPU.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace

from ...errors import InputError
from .steps import Context, Task, run_task, run_worker_task

log = logging.getLogger(__name__)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


class LocalEngine:
    """`workers` processes for the CPU steps (and the model steps when there is no GPU); with a GPU, one more
    process that runs the model steps on it."""

    name = "local"

    def __init__(self, workers: int, model_device: str | None = None):
        self.workers = workers
        # Workers fork from a clean server process, never from this one: a caller that already ran a face detector,
        # CUDA or thread pools would hand their state to forked children (MediaPipe then aborts). Spawn elsewhere.
        method = "forkserver" if sys.platform.startswith("linux") else "spawn"
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            context.set_forkserver_preload([__name__.rsplit(".", 1)[0] + ".steps"])  # imported once, then forked
        self.pool = ProcessPoolExecutor(workers, mp_context=context)
        self.model_device = model_device or ("cuda" if _cuda_available() else "cpu")
        self.model_pool = (
            ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            if self.model_device.startswith("cuda") else None
        )

    def slots(self, model: bool) -> int:
        return 2 if model and self.model_pool else 2 * self.workers

    def submit(self, ctx: Context, task: Task, model: bool) -> Future:
        if model and self.model_pool is not None:
            return self.model_pool.submit(run_worker_task, replace(ctx, model_device=self.model_device), task)
        return self.pool.submit(run_worker_task, ctx, task)

    def close(self, cancel: bool = False) -> None:
        for pool in (self.pool, self.model_pool):
            if pool is not None:
                pool.shutdown(wait=not cancel, cancel_futures=cancel)


class InlineEngine:
    """Every step in this process, one after another: for debugging (breakpoints work) and for tests that replace a
    step."""

    name = "inline"
    workers = 1

    def __init__(self, model_device: str | None = None):
        self.model_device = model_device or ("cuda" if _cuda_available() else "cpu")

    def slots(self, model: bool) -> int:
        return 1

    def submit(self, ctx: Context, task: Task, model: bool) -> Future:
        future: Future = Future()
        future.set_result(run_task(replace(ctx, model_device=self.model_device) if model else ctx, task))  # never raises
        return future

    def close(self, cancel: bool = False) -> None:
        pass


class RayEngine:
    """Steps as Ray tasks: CPU steps take one CPU each, model steps one GPU when the cluster has GPUs.

    `address`: a running cluster (`ray start --head` on one node, `ray start --address HEAD:6379` on the others),
    else the RAY_ADDRESS variable, else a local Ray instance with `workers` CPUs, shut down at the end. Every node
    must see the input and output folders at the same paths (a shared file system) and have latentsync installed.
    """

    name = "ray"

    def __init__(self, workers: int, address: str | None = None):
        try:
            import ray
        except ImportError as exc:
            raise InputError("--engine ray needs Ray", "pip install 'latentsync[cluster]'") from exc
        self.ray = ray
        address = address or os.environ.get("RAY_ADDRESS")
        self.owns_instance = not ray.is_initialized()
        if self.owns_instance:
            options = dict(address=address) if address else dict(num_cpus=workers)
            ray.init(**options, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        resources = ray.cluster_resources()
        self.workers = int(resources.get("CPU", workers))
        self.gpus = int(resources.get("GPU", 0))
        self.cpu_task = ray.remote(num_cpus=1, max_retries=1)(run_worker_task)
        self.model_task = ray.remote(num_cpus=1, num_gpus=1 if self.gpus else 0, max_retries=1)(run_worker_task)
        log.info("ray: %d CPUs, %d GPUs", self.workers, self.gpus)

    def slots(self, model: bool) -> int:
        return 2 * (self.gpus if model and self.gpus else self.workers)

    def submit(self, ctx: Context, task: Task, model: bool) -> Future:
        if model and self.gpus:
            return self.model_task.remote(replace(ctx, model_device="cuda"), task).future()
        return self.cpu_task.remote(ctx, task).future()

    def close(self, cancel: bool = False) -> None:
        if self.owns_instance:
            self.ray.shutdown()


ENGINES = ("local", "ray", "inline")  # the command line offers local and ray


def create_engine(name: str, workers: int, ray_address: str | None = None) -> LocalEngine | RayEngine | InlineEngine:
    """The engine called `name` (one of ENGINES)."""
    if name == "inline":
        return InlineEngine()
    return LocalEngine(workers) if name == "local" else RayEngine(workers, ray_address)
