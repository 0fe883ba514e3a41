"""`prepare_dataset`: walk every video and clip through the steps, reusing every result the manifest already holds.

Each item (a source video, then each of its segments) goes through its steps in order. A step runs only when the
manifest has no result for it under the same key; the key chains the input's identity (size and modification
time for reading, then the content hash), the step's own settings, the weights it uses and the keys of the steps
it depends on, so that changed settings or weights redo exactly the steps they affect. Thresholds are applied here,
to stored scores, so changing one runs nothing again. Results are recorded one transaction each as they arrive; a
run killed at any moment loses only the tasks in flight, and kept clips are listed only at the end.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import heapq
import itertools
import json
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from ...errors import InputError, LatentSyncError
from ...media import FPS
from ...weights import has_components, resolve
from .engines import ENGINES, create_engine
from .manifest import CLIP_SCORES, Manifest
from .report import SUMMARY, PrepareReport, write_outputs
from .settings import PrepareSettings
from .steps import CLIP_STEPS, CLIPS_DIR, MODEL_STEPS, VIDEO_STEPS, WORK_DIR, Context, Outcome, Task, clip_id

log = logging.getLogger(__name__)

MANIFEST = "manifest.sqlite"
LOCK = ".prepare.lock"
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
STEP_VERSION = 1  # bump when a step's output changes for the same inputs
ORDER = {step: i for i, step in enumerate(VIDEO_STEPS + CLIP_STEPS)}
SWITCHABLE = ("shots", "face_filter", "sync", "quality")
MODEL_WEIGHTS = {"sync": ("syncnet_v2", "s3fd"), "quality": ("hyperiqa",)}


def list_videos(input_dir: Path, output_dir: Path) -> list[Path]:
    """Every video file under `input_dir`, sorted, leaving out our own output when it lies inside."""
    if not input_dir.is_dir():
        raise InputError(f"input folder not found: {input_dir}", "pass a folder of talking-head videos")
    output = output_dir.resolve()
    return sorted(
        p for p in input_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and not p.resolve().is_relative_to(output)
    )


def prepare_dataset(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    settings: PrepareSettings = PrepareSettings(),
    *,
    engine: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    offline: bool = False,
    device: str = "cpu",
    progress: bool = True,
) -> PrepareReport:
    """Run the data pipeline on every video under `input_dir`; outputs, manifest and file lists go to `output_dir`.

    Re-running on the same folders only does the work that is missing or whose settings changed.
    """
    settings.check()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    videos = list_videos(input_dir, output_dir)
    if not videos:
        raise InputError(f"no videos found under {input_dir}", f"expected files ending in {', '.join(VIDEO_SUFFIXES)}")
    _check_extras(settings)
    weights = {}
    for step, components in MODEL_WEIGHTS.items():
        if settings.enabled(step):  # missing weights fail here, before any work
            weights.update({k: str(v) for k, v in resolve(components, checkpoint_dir=checkpoint_dir, offline=offline).items()})
    backend = settings.face_backend
    if backend == "auto":
        backend = "insightface" if has_components(["face"], checkpoint_dir=checkpoint_dir) else "mediapipe"
    ctx = Context(str(input_dir.resolve()), str(output_dir.resolve()), settings, backend,
                  None if checkpoint_dir is None else str(checkpoint_dir), offline, device, device, weights)
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}", f"choose one of {', '.join(ENGINES)}")
    workers = workers or max(1, (os.cpu_count() or 2) - 1)
    started = time.monotonic()
    with _exclusive(output_dir):
        pool = create_engine(engine, workers, ray_address)
        try:
            with Manifest(output_dir / MANIFEST) as manifest:
                _remove_partial_files(output_dir)
                runner = _Runner(ctx, manifest, manifest.start_run({**asdict(settings), "face_backend": backend}),
                                 _weight_ids(weights), progress)
                runner.forget_missing([v.relative_to(input_dir).as_posix() for v in videos])
                runner.run([_VideoItem(v.relative_to(input_dir).as_posix(), v.stat()) for v in videos], pool)
                pool.close()
                report = write_outputs(manifest, output_dir, settings)
        except BrokenProcessPool as exc:
            pool.close(cancel=True)
            raise LatentSyncError("a worker process died (out of memory, or killed)",
                                  "run the same command again: finished work is kept; try fewer --workers") from exc
        except BaseException:
            pool.close(cancel=True)
            raise
    report.seconds = time.monotonic() - started
    report.computed, report.step_seconds, report.step_cpu_seconds = runner.computed, runner.step_seconds, runner.step_cpu_seconds
    report.workers = pool.workers
    report.write_summary(output_dir / SUMMARY)
    return report


@dataclass
class _VideoItem:
    video: str
    stat: os.stat_result
    keys: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.video

    steps = VIDEO_STEPS


@dataclass
class _ClipItem:
    parent: _VideoItem
    start: int
    end: int
    keys: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return clip_id(self.parent.video, self.start, self.end)

    @property
    def video(self) -> str:
        return self.parent.video

    steps = CLIP_STEPS


class _Runner:
    def __init__(self, ctx: Context, manifest: Manifest, run: int, weight_ids: dict[str, str], progress: bool):
        self.ctx, self.settings, self.manifest, self.run_id = ctx, ctx.settings, manifest, run
        self.weight_ids = weight_ids
        self.queues: dict[bool, list] = {False: [], True: []}  # model step? -> heap of waiting tasks
        self.inflight: dict[Future, tuple] = {}
        self.busy = {False: 0, True: 0}
        self.order = itertools.count()
        self.reached: set[tuple[str, str]] = set()  # (item, step) pairs counted in the progress bars' totals
        self.settled: set[tuple[str, str]] = set()  # ... and those counted as finished
        self.computed: dict[str, int] = {}  # step -> tasks run by this run
        self.step_seconds: dict[str, float] = {}  # step -> worker wall time spent on it by this run
        self.step_cpu_seconds: dict[str, float] = {}  # step -> worker CPU time
        self.bars = {
            step: tqdm(desc=f"{step:>11}", total=0, unit="item", disable=not progress, position=i, leave=True,
                       mininterval=0.5)
            for i, step in enumerate(s for s in VIDEO_STEPS + CLIP_STEPS if self._runs(s))
        }

    # bookkeeping
    def forget_missing(self, present: list[str]) -> None:
        """Forget videos that are no longer in the input folder, with their clips."""
        known = {r["video"] for r in self.manifest.rows("videos")}
        gone = known - set(present)
        with self.manifest.transaction():
            for video in gone:
                self.manifest.forget(self.manifest.clips_of(video), "clips")
                self.manifest.forget([video], "videos")

    def _runs(self, step: str) -> bool:
        """Whether a step runs at all (`resample` always does: switched off, it only checks the rates)."""
        return step not in SWITCHABLE or self.settings.enabled(step)

    # the loop
    def run(self, videos: list[_VideoItem], engine) -> None:
        self.engine = engine
        with self.manifest.transaction():
            for item in videos:
                self.manifest.put_video(item.video, size=item.stat.st_size, mtime_ns=item.stat.st_mtime_ns, state="pending")
        for item in videos:
            self.advance(item)
        while True:
            self._pump()
            if not self.inflight:
                break
            done, _ = wait(list(self.inflight), return_when=FIRST_COMPLETED)
            for future in done:
                item, step, key = self.inflight.pop(future)
                self.busy[step in MODEL_STEPS] -= 1
                try:
                    outcome = future.result()
                except BrokenProcessPool:  # a worker was killed: stop; the next run redoes what was in flight
                    raise
                except Exception as exc:  # noqa: BLE001 - a worker that died (Ray): recorded, retried next run
                    outcome = Outcome("error", None, "error", f"{type(exc).__name__}: {exc}")
                if outcome.status == "error":
                    log.warning("%s of %s failed: %s", step, item.id, outcome.detail)
                elif outcome.status == "rejected":
                    log.info("%s: rejected at %s: %s (%s)", item.id, step, outcome.reason, outcome.detail)
                with self.manifest.transaction():
                    self.manifest.put_step(item.id, step, key, outcome.status, outcome.result, outcome.reason,
                                           outcome.detail, self.run_id)
                self.computed[step] = self.computed.get(step, 0) + 1
                self.step_seconds[step] = self.step_seconds.get(step, 0.0) + outcome.seconds
                self.step_cpu_seconds[step] = self.step_cpu_seconds.get(step, 0.0) + outcome.cpu_seconds
                self.advance(item)
        for bar in self.bars.values():
            bar.close()

    def _pump(self) -> None:
        for model, queue in self.queues.items():
            while queue and self.busy[model] < self.engine.slots(model):
                _, _, item, step, key, task = heapq.heappop(queue)
                self.inflight[self.engine.submit(self.ctx, task, model)] = (item, step, key)
                self.busy[model] += 1

    def _enqueue(self, item, step: str, key: str, inputs: dict) -> None:
        task = Task(step, item.id, item.video, inputs)
        model = step in MODEL_STEPS
        heapq.heappush(self.queues[model], (-ORDER[step], next(self.order), item, step, key, task))

    def _progress(self, item, step: str, finished: bool) -> None:
        """Count an item in a step's progress bar once when it reaches the step, once when the step is done."""
        seen = self.settled if finished else self.reached
        if (item.id, step) in seen:
            return
        seen.add((item.id, step))
        if finished:
            self.bars[step].update(1)
        else:
            self.bars[step].total += 1
            self.bars[step].refresh()

    # one item
    def advance(self, item) -> None:
        """Take the item through its steps until one has to run (queued) or the item is finished."""
        for step in item.steps:
            if not self._runs(step):
                continue
            self._progress(item, step, finished=False)
            key = self._key(item, step)
            inputs = {**self._inputs(item, step), "tag": key[:10]}
            row = self.manifest.step(item.id, step)
            fresh = row is not None and row["key"] == key and (row["status"] != "error" or row["run"] == self.run_id)
            if not fresh or not self._outputs_exist(row):
                if row is not None:  # its file may be replaced now: a killed run must not leave it pointing there
                    with self.manifest.transaction():
                        self.manifest.forget_step(item.id, step)
                self._enqueue(item, step, key, inputs)
                return
            self._progress(item, step, finished=True)
            item.keys[step] = key
            if row["status"] != "done":
                self._finish(item, row["status"], step, row["reason"], row["detail"])
                return
            item.results[step] = row["result"]
            rejection = self._decide(step, row["result"])
            if isinstance(item, _ClipItem) and step in ("face_filter", "sync", "quality"):
                with self.manifest.transaction():
                    self.manifest.put_clip(item.id, **{k: v for k, v in row["result"].items()})
            if rejection:
                self._finish(item, "rejected", step, *rejection)
                return
        self._complete(item)

    def _key(self, item, step: str) -> str:
        s, video = self.settings, item if isinstance(item, _VideoItem) else item.parent
        span = None if isinstance(item, _VideoItem) else [item.start, item.end]
        content = video.results.get("read", {}).get("content")
        parts = {
            "read": lambda: [video.video, video.stat.st_size, video.stat.st_mtime_ns],
            "resample": lambda: [content, s.enabled("resample")],
            "shots": lambda: [content, s.shot_threshold],
            "faces": lambda: [content, self.ctx.face_backend],
            "segments": lambda: [video.keys["faces"], video.keys.get("shots"), video.keys["resample"], s.clip_frames()],
            "face_filter": lambda: [video.keys["faces"], span],
            "align": lambda: [video.keys["faces"], span, s.resolution],
            "sync": lambda: [item.keys["align"], self.weight_ids["syncnet_v2"], self.weight_ids["s3fd"]],
            "quality": lambda: [item.keys["align"], self.weight_ids["hyperiqa"]],
            "publish": lambda: [item.keys["align"], self._offset(item)],
        }[step]()
        return hashlib.sha256(json.dumps([step, STEP_VERSION, parts]).encode()).hexdigest()[:20]

    def _inputs(self, item, step: str) -> dict:
        video = item if isinstance(item, _VideoItem) else item.parent
        r = video.results
        if step == "resample":
            return {"fps": r["read"]["fps"]}
        if step == "segments":
            return {"track": r["faces"]["track"], "cuts": r.get("shots", {}).get("cuts", []),
                    "samples": r["resample"]["samples"]}
        if step in ("face_filter", "align"):
            return {"span": [item.start, item.end], "track": r["faces"]["track"]}
        if step in ("sync", "quality"):
            return {"aligned": item.results["align"]["aligned"]}
        if step == "publish":
            return {"span": [item.start, item.end], "aligned": item.results["align"]["aligned"],
                    "offset": self._offset(item)}
        return {}

    def _offset(self, item: _ClipItem) -> int:
        return int(item.results["sync"]["sync_offset"]) if self.settings.enabled("sync") else 0

    def _outputs_exist(self, row: dict) -> bool:
        """Whether the files a stored result names are there."""
        result = row["result"] or {}
        out = Path(self.ctx.output_dir)
        return all((out / result[name]).is_file() for name in ("track", "aligned", "path") if name in result)

    def _decide(self, step: str, result: dict) -> tuple[str, str] | None:
        """The rejection (reason, detail) that the thresholds give for a step's scores, or None."""
        s = self.settings
        if step == "face_filter":
            if s.min_face_size > 0 and result["face_size"] < s.min_face_size:
                return "face too small", f"{result['face_size']:g} px < {s.min_face_size:g} px"
            if s.max_faces > 0 and result["faces"] > s.max_faces:
                return "too many faces", f"{result['faces']} faces > {s.max_faces}"
        if step == "sync":
            if result["sync_confidence"] < s.min_sync_confidence:
                return "low sync confidence", f"{result['sync_confidence']:.3f} < {s.min_sync_confidence:g}"
            if abs(result["sync_offset"]) > s.max_sync_offset:
                return "sync offset too large", f"|{result['sync_offset']}| > {s.max_sync_offset:g}"
        if step == "quality" and result["quality"] < s.min_quality:
            return "low quality", f"{result['quality']:.2f} < {s.min_quality:g}"
        return None

    def _finish(self, item, state: str, step: str, reason: str, detail: str | None) -> None:
        """The item stops here: rejected (or failed) at `step`."""
        with self.manifest.transaction():
            if isinstance(item, _VideoItem):
                self.manifest.forget(self.manifest.clips_of(item.video), "clips")
                self.manifest.put_video(item.video, state=state, step=step, reason=reason, detail=detail,
                                        content=item.results.get("read", {}).get("content"),
                                        seconds=item.results.get("read", {}).get("seconds"))
            else:
                self.manifest.put_clip(item.id, state=state, step=step, reason=reason, detail=detail, path=None)

    def _complete(self, item) -> None:
        if isinstance(item, _ClipItem):
            with self.manifest.transaction():
                self.manifest.put_clip(item.id, state="kept", step=None, reason=None, detail=None,
                                       path=item.results["publish"]["path"])
            return
        spans = [tuple(span) for span in item.results["segments"]["spans"]]
        clips = [_ClipItem(item, start, end) for start, end in spans]
        with self.manifest.transaction():
            read = item.results["read"]
            self.manifest.put_video(item.video, state="done", step=None, reason=None, detail=None,
                                    content=read["content"], seconds=read["seconds"])
            wanted = {c.id for c in clips}
            self.manifest.forget([c for c in self.manifest.clips_of(item.video) if c not in wanted], "clips")
            split = "val" if _unit_hash(item.video) < self.settings.val_fraction else "train"
            for clip in clips:  # scores are filled in again as the clip goes through its steps
                self.manifest.put_clip(clip.id, video=item.video, start=clip.start, end=clip.end,
                                       seconds=(clip.end - clip.start) / FPS, state="pending", split=split, path=None,
                                       step=None, reason=None, detail=None, **dict.fromkeys(CLIP_SCORES))
        for clip in clips:
            self.advance(clip)


def _check_extras(settings: PrepareSettings) -> None:
    """The optional packages the run needs, checked before any work."""
    import importlib.util

    needed = ["matplotlib"] + (["scenedetect"] if settings.enabled("shots") else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"`latentsync prepare` needs {', '.join(missing)}", "pip install 'latentsync[data]'")


def _unit_hash(text: str) -> float:
    """A stable number in [0, 1) for a name (the train / validation split by source video)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


def _weight_ids(weights: dict[str, str]) -> dict[str, str]:
    """Content hashes of the weight files, so that other weights redo the steps that used them."""
    ids = {}
    for name, path in weights.items():
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        ids[name] = digest.hexdigest()[:16]
    return ids


@contextlib.contextmanager
def _exclusive(output_dir: Path):
    """Hold a lock on the output folder: two runs writing one manifest and one set of clips would collide."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / LOCK, "w") as handle:
        try:  # a POSIX record lock: held by this process only (not its forked workers), gone when it dies
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"another `latentsync prepare` is writing to {output_dir}",
                             "wait for it to finish, or use another output folder") from None
        yield


def _remove_partial_files(output_dir: Path) -> None:
    """Temporary files of clips and tracks that a killed run was writing (`atomic_path` names them `.<stem>.*`)."""
    for folder in (output_dir / CLIPS_DIR, output_dir / WORK_DIR):
        if folder.is_dir():
            for path in folder.rglob(".*"):
                if path.is_file():
                    path.unlink()
