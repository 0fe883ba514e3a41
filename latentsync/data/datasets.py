"""Training samples cut from the aligned clips written by `latentsync prepare` (SPEC 10).

A clip is an R x R, 25 fps video of one face with its 16 kHz speech muxed in (AAC). Items are dicts of tensors.
Sample ids may exceed the number of clips: id `i` reads clip `i % len(clips)` and draws its windows from a
random generator seeded with (seed, i), so an item depends only on its id (see `training.sampling.TrainSampler`),
never on worker scheduling; a resumed run sees exactly the data it would have seen. With `samples_per_clip`
the pass number is taken modulo that count, so each clip offers a fixed set of samples (a small set a model
can learn by heart: the usual check that a training loop works). With `frames_in_memory` each process decodes a
clip once and keeps all its frames (for small data sets, e.g. synthetic checks: decoding dominates the cost of
an item; a large set would not fit in memory).

A clip too short for a sample, or unreadable, is skipped with a logged reason (once per process) and another
clip, chosen from the same id, is used instead; a worker only fails when no clip at all is usable.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import av
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..audio import load_audio, mel_window, syncnet_mel
from ..audio import mel as mel_settings
from ..audio.whisper import WhisperFeatures, audio_windows
from ..errors import InputError, LatentSyncError
from ..media import FPS, probe_video, read_frames
from .cache import FeatureCache, audio_hash, cache_key, weights_hash

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 64  # clips tried for one item before giving up
_MEMO_ENTRIES = 24  # per-clip audio results (samples, mel, Whisper features) each process keeps in memory
SEGMENTING = "seamless"  # Whisper segmentation used for training features (same as "reference" up to 30 s)
# Everything the SyncNet mel depends on; part of its cache key.
_MEL_SETTINGS = {
    name: getattr(mel_settings, name) for name in dir(mel_settings) if name.startswith("SYNCNET_") and name.isupper()
}


# Where each kind of clip set comes from, for hints.
_OPTIONS = {"training": "--fileslist / --data-dir (data.train_fileslist / train_data_dir)",
            "validation": "--val-fileslist / --val-data-dir (data.val_fileslist / val_data_dir)"}  # fmt: skip


def read_fileslist(
    fileslist: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None, purpose: str = "training"
) -> list[Path]:
    """Clip paths from a text file (one per line; `#` comments; relative paths are relative to the file's folder)
    and/or every `.mp4` under a folder (sorted). Listed files that do not exist are dropped with a warning.
    `purpose`: "training" or "validation", for the hints of errors."""
    options = _OPTIONS[purpose]
    if not fileslist and not data_dir:
        raise InputError(f"no {purpose} data given", f"pass a file list or a folder of clips: {options}")
    clips: list[Path] = []
    if fileslist:
        listing = Path(fileslist)
        if not listing.is_file():
            raise InputError(f"{purpose} file list not found: {listing}",
                             f"check {options}; a file list has one clip path per line, e.g. prepare's fileslist.txt")
        for line in listing.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                path = Path(line).expanduser()
                clips.append(path if path.is_absolute() else listing.parent / path)
    if data_dir:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise InputError(f"{purpose} data folder not found: {folder}",
                             f"check {options}: the OUTPUT_DIR of `latentsync prepare`")
        clips.extend(sorted(folder.rglob("*.mp4")))
    missing = [p for p in clips if not p.is_file()]
    if missing:
        log.warning("%d listed clips do not exist and are ignored, e.g. %s", len(missing), missing[0])
    clips = [p for p in clips if p.is_file()]
    if not clips:
        raise InputError(f"no clips found in the given {purpose} file list / folder",
                         f"run `latentsync prepare` first, or check {options}")
    return clips


def to_model_range(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 RGB -> (F, 3, H, W) float32 in [-1, 1] (x / 255 * 2 - 1)."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


class _Unusable(Exception):
    """A clip that cannot give a sample; the message is the reason."""


class _ClipDataset(Dataset):
    """What both datasets share: clip lookup by sample id, skipping bad clips, frames, audio and the SyncNet mel."""

    windows_needed: int  # a clip must hold this many windows of num_frames frames

    def __init__(
        self, clips: list[Path], resolution: int, num_frames: int, cache_dir: Path | None, seed: int,
        samples_per_clip: int | None, frames_in_memory: bool = False,
    ):
        if not clips:
            raise InputError("the dataset has no clips", "check the file list / data folder")
        if samples_per_clip is not None and samples_per_clip < 1:
            raise InputError(f"samples_per_clip must be at least 1, got {samples_per_clip}")
        self.clips = [Path(c) for c in clips]
        self.resolution, self.num_frames, self.seed = resolution, num_frames, seed
        self.samples_per_clip = samples_per_clip
        self.min_frames = self.windows_needed * num_frames
        self.cache = FeatureCache(cache_dir)
        self.skipped: dict[str, str] = {}  # clip -> reason, in this process
        self._lengths: dict[Path, int] = {}
        self._memo: OrderedDict[tuple, Any] = OrderedDict()
        self.frames_in_memory = frames_in_memory
        self._decoded: dict[Path, np.ndarray] = {}  # clip -> all its frames, with frames_in_memory

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, sample_id: int) -> dict[str, Any]:
        index, data_pass = int(sample_id) % len(self.clips), int(sample_id) // len(self.clips)
        if self.samples_per_clip is not None:
            data_pass %= self.samples_per_clip
        rng = np.random.default_rng([self.seed, data_pass * len(self.clips) + index])
        for _ in range(MAX_ATTEMPTS):
            clip = self.clips[index]
            if str(clip) not in self.skipped:
                try:
                    return self._item(clip, rng)
                except (_Unusable, LatentSyncError, av.FFmpegError) as exc:
                    self.skipped[str(clip)] = str(exc)
                    log.warning("skipping clip %s: %s", clip, exc)
            if len(self.skipped) >= len(self.clips):
                break
            index = int(rng.integers(len(self.clips)))
        raise InputError(
            f"no usable clip found ({len(self.skipped)} of {len(self.clips)} skipped, e.g. {next(iter(self.skipped.items()), '')})",
            f"training needs clips of at least {self.min_frames} frames with a speech track; re-run `latentsync prepare`",
        )

    def _item(self, clip: Path, rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError

    def _length(self, clip: Path) -> int:
        """Frames of the clip at 25 fps that its audio covers too, so that no window runs past the mel; raises
        _Unusable below `min_frames`."""
        if clip not in self._lengths:
            audio_frames = int(self._mel(clip).shape[1] * FPS / mel_settings.SYNCNET_FRAMES_PER_SECOND)
            self._lengths[clip] = min(probe_video(clip).frames_at(FPS), audio_frames)
        length = self._lengths[clip]
        if length < self.min_frames:
            raise _Unusable(f"only {length} frames, at least {self.min_frames} are needed")
        return length

    def _frames(self, clip: Path, start: int) -> np.ndarray:
        """`num_frames` consecutive frames from `start` as (F, R, R, 3) uint8 (resized if the clip has another size)."""
        if self.frames_in_memory:
            if clip not in self._decoded:
                self._decoded[clip] = self._resized([f for _, f in read_frames(clip, FPS)])
            return self._decoded[clip][start : start + self.num_frames]
        return self._resized([f for _, f in read_frames(clip, FPS, np.arange(start, start + self.num_frames))])

    def _resized(self, frames: list[np.ndarray]) -> np.ndarray:
        """(F, R, R, 3) uint8 of the frames, resized to the dataset's resolution when they have another size."""
        size = self.resolution
        if frames[0].shape[:2] != (size, size):
            shrink = frames[0].shape[0] > size
            interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4
            frames = [cv2.resize(f, (size, size), interpolation=interpolation) for f in frames]
        return np.stack(frames)

    def _memoised(self, kind: str, clip: Path, compute: Callable[[], Any]) -> Any:
        """A small per-process memo of per-clip audio results, keyed by the clip's path, size and mtime (the
        on-disk caches behind it are keyed by content)."""
        stat = clip.stat()
        key = (kind, str(clip), stat.st_size, stat.st_mtime_ns)
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        value = compute()
        self._memo[key] = value
        if len(self._memo) > _MEMO_ENTRIES:
            self._memo.popitem(last=False)
        return value

    def _audio(self, clip: Path) -> tuple[np.ndarray, str]:
        """The clip's 16 kHz samples and their content hash."""

        def read() -> tuple[np.ndarray, str]:
            samples = load_audio(clip)
            return samples, audio_hash(samples)

        return self._memoised("audio", clip, read)

    def _mel(self, clip: Path) -> np.ndarray:
        """The clip's whole SyncNet mel (80, T), from the cache when possible."""

        def compute() -> np.ndarray:
            samples, digest = self._audio(clip)
            key = cache_key(kind="syncnet_mel", audio=digest, settings=_MEL_SETTINGS)
            return self.cache.get_or_compute("mel", key, lambda: syncnet_mel(samples))

        return self._memoised("mel", clip, compute)

    def _mel_window(self, clip: Path, start: int) -> torch.Tensor:
        """(1, 80, 52) mel window of the `num_frames` video frames from `start`."""
        return torch.from_numpy(mel_window(self._mel(clip), start, self.num_frames).copy())[None]


class SyncNetDataset(_ClipDataset):
    """SyncNet samples (SPEC 10): 16 frames and a mel window, in sync (label 1) or not (label 0), 50/50.

    Item: "frames" (3F, R/2 or R, R) float32 in [-1, 1], frames stacked on channels (frame-major, RGB);
    "mel" (1, 80, 52) of the window at "start"; "label" 1.0 when the frames are that window ("frames_start" ==
    "start"), 0.0 when they come from another window of the same clip; "clip". Clips under 2F frames (32) are
    skipped. With `other_mel`, also "other_mel": the mel window at "other_start", another window of the same clip
    than the frames' (a same-clip negative for every item, used by the contrastive term).
    """

    windows_needed = 2

    def __init__(
        self,
        clips: list[Path],
        resolution: int = 256,
        num_frames: int = 16,
        lower_half: bool = True,
        cache_dir: Path | None = None,
        seed: int = 0,
        samples_per_clip: int | None = None,
        frames_in_memory: bool = False,
        other_mel: bool = False,
    ):
        super().__init__(clips, resolution, num_frames, cache_dir, seed, samples_per_clip, frames_in_memory)
        self.lower_half = lower_half
        self.other_mel = other_mel

    def _item(self, clip: Path, rng: np.random.Generator) -> dict[str, Any]:
        last_start = self._length(clip) - self.num_frames
        start = int(rng.integers(last_start + 1))
        in_sync = bool(rng.random() < 0.5)
        frames_start = start
        if not in_sync:  # any other window of the clip
            frames_start = int(rng.integers(last_start))
            frames_start += frames_start >= start
        mel = self._mel_window(clip, start)
        frames = to_model_range(self._frames(clip, frames_start))
        if self.lower_half:
            frames = frames[:, :, self.resolution // 2 :]
        item = {
            "frames": frames.flatten(0, 1),
            "mel": mel,
            "label": torch.tensor(1.0 if in_sync else 0.0),
            "clip": str(clip),
            "start": start,
            "frames_start": frames_start,
        }
        if self.other_mel:  # drawn last, so that the published items stay the same
            other_start = int(rng.integers(last_start))
            other_start += other_start >= frames_start
            item["other_mel"] = self._mel_window(clip, other_start)
            item["other_start"] = other_start
        return item


class UNetDataset(_ClipDataset):
    """U-Net samples (SPEC 10): 16 ground-truth frames, 16 reference frames and their audio.

    Item: "frames" (F, 3, R, R) float32 in [-1, 1] from "start"; "ref_frames" (F, 3, R, R) from "ref_start", a
    window of the same clip at least F frames away (no overlap); "audio_windows" (F, 50, C) Whisper tokens of the
    ground-truth frames; "mel" (1, 80, 52) SyncNet window at "start"; "clip"; and, when a mask (R, R) in [0, 1] is
    given, "masked_frames" = frames * mask (the mouth becomes 0). Clips under 3F frames (48) are skipped.

    Whisper features run in the process that reads the item (a DataLoader worker): give a CPU `WhisperFeatures`
    when using workers; their results are cached, so each clip's are computed once.
    """

    windows_needed = 3

    def __init__(
        self,
        clips: list[Path],
        whisper: WhisperFeatures,
        resolution: int,
        num_frames: int = 16,
        mask: np.ndarray | None = None,
        cache_dir: Path | None = None,
        seed: int = 0,
        samples_per_clip: int | None = None,
        frames_in_memory: bool = False,
    ):
        super().__init__(clips, resolution, num_frames, cache_dir, seed, samples_per_clip, frames_in_memory)
        self.whisper = whisper
        self.whisper_identity = weights_hash(whisper.encoder)
        self.mask = None
        if mask is not None:
            mask = np.asarray(mask, dtype=np.float32)
            if mask.shape != (resolution, resolution) or mask.min() < 0 or mask.max() > 1:
                raise InputError(
                    f"the mask must be ({resolution}, {resolution}) with values in [0, 1], got {mask.shape}",
                    "use latentsync.pipeline.mask.load_mouth_mask(resolution)",
                )
            self.mask = torch.from_numpy(mask)

    def _whisper_features(self, clip: Path) -> torch.Tensor:
        """The clip's whole Whisper feature stack (T, layers, C), from the cache when possible."""

        def compute() -> torch.Tensor:
            samples, digest = self._audio(clip)
            key = cache_key(kind="whisper", audio=digest, encoder=self.whisper_identity, segmenting=SEGMENTING)
            features = self.cache.get_or_compute("whisper", key, lambda: self.whisper.features(samples, SEGMENTING).numpy())
            return torch.from_numpy(features)

        return self._memoised("whisper", clip, compute)

    def _item(self, clip: Path, rng: np.random.Generator) -> dict[str, Any]:
        count, last_start = self.num_frames, self._length(clip) - self.num_frames
        start = int(rng.integers(last_start + 1))
        # Reference starts at least `count` frames away on either side; 3 * count frames keep one available.
        ref_starts = np.r_[0 : max(0, start - count + 1), start + count : last_start + 1]
        ref_start = int(rng.choice(ref_starts))
        frames = to_model_range(self._frames(clip, start))
        item = {
            "frames": frames,
            "ref_frames": to_model_range(self._frames(clip, ref_start)),
            "audio_windows": audio_windows(self._whisper_features(clip), count, start),
            "mel": self._mel_window(clip, start),
            "clip": str(clip),
            "start": start,
            "ref_start": ref_start,
        }
        if self.mask is not None:
            item["masked_frames"] = frames * self.mask
        return item
