"""Which videos to evaluate and against which source videos, checked before any model is loaded.

Generated videos come as files, folders (their videos, sorted), `.txt` lists (one path a line, `#` comments,
paths relative to the list) or a `.csv` with `generated` and `reference` columns (an explicit pairing).
References come as files or a folder; a generated video is paired with the reference of the same file stem
(`out/talk.mp4` with `src/talk.mov`); a single generated video and a single reference pair whatever their names.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..media import VideoInfo, probe_video

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
PATHS = str | os.PathLike


@dataclass(frozen=True)
class VideoPair:
    """A generated video and its source video (None when no reference was given)."""

    generated: Path
    reference: Path | None = None


def _videos_in(folder: Path) -> list[Path]:
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise InputError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in the folder {folder}", "check the folder")
    return videos


def _relative(base: Path, text: str) -> Path:
    path = Path(text.strip()).expanduser()
    return path if path.is_absolute() else base / path


def _read_csv(path: Path) -> list[VideoPair]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "generated" not in rows[0]:
        raise InputError(f"{path} needs a header with a `generated` column (and optionally `reference`)",
                         "e.g. a first line `generated,reference`, then one pair a line")
    return [VideoPair(_relative(path.parent, r["generated"]),
                      _relative(path.parent, r["reference"]) if (r.get("reference") or "").strip() else None)
            for r in rows]


def _expand(items: Iterable[PATHS], what: str) -> tuple[list[Path], list[VideoPair]]:
    """Video paths from files, folders and .txt lists; explicit pairs from .csv files."""
    videos: list[Path] = []
    pairs: list[VideoPair] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            videos.extend(_videos_in(path))
        elif path.suffix.lower() == ".csv" and path.is_file():
            pairs.extend(_read_csv(path))
        elif path.suffix.lower() == ".txt" and path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            videos.extend(_relative(path.parent, ln) for ln in lines if ln.strip() and not ln.strip().startswith("#"))
        elif not path.exists():
            raise InputError(f"{what} not found: {path}", "check the path")
        else:
            videos.append(path)
    return videos, pairs


def collect_pairs(
    generated: PATHS | Sequence[PATHS],
    reference: PATHS | Sequence[PATHS] | None = None,
    reference_dir: PATHS | None = None,
) -> list[VideoPair]:
    """The (generated, reference) pairs described by the arguments; raises InputError when one cannot be paired."""
    as_list = lambda x: [x] if isinstance(x, (str, os.PathLike)) else list(x or [])
    videos, pairs = _expand(as_list(generated), "generated video")
    if not videos and not pairs:
        raise InputError("no generated videos given", "pass video files, folders, a .txt list or a .csv of pairs")
    refs, _ = _expand(as_list(reference), "reference video")
    if reference_dir is not None:
        folder = Path(reference_dir).expanduser()
        if not folder.is_dir():
            raise InputError(f"reference folder not found: {folder}", "pass the folder of the source videos")
        refs.extend(_videos_in(folder))
    if not refs:
        return pairs + [VideoPair(v) for v in videos]
    if len(videos) == 1 and len(refs) == 1:
        return pairs + [VideoPair(videos[0], refs[0])]
    by_stem: dict[str, Path] = {}
    for ref in refs:
        if ref.stem in by_stem and by_stem[ref.stem] != ref:
            raise InputError(f"two reference videos share the name {ref.stem!r}: {by_stem[ref.stem]} and {ref}",
                             "references are matched by file name; keep one per name or pair them with a .csv")
        by_stem[ref.stem] = ref
    unmatched = [v.name for v in videos if v.stem not in by_stem]
    if unmatched:
        raise InputError(
            f"no reference video with the same name for: {', '.join(unmatched[:5])}"
            + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""),
            "name each source like its generated video (any video extension), or pair them in a .csv "
            "with columns generated,reference",
        )
    return pairs + [VideoPair(v, by_stem[v.stem]) for v in videos]


@dataclass(frozen=True)
class CheckedPair:
    """A pair whose files were probed: sizes and frame counts at 25 fps."""

    pair: VideoPair
    generated: VideoInfo
    reference: VideoInfo | None


def check_pairs(pairs: Sequence[VideoPair], needs_reference: Sequence[str], needs_audio: bool) -> list[CheckedPair]:
    """Probe every video; raise InputError for anything the requested metrics cannot use.

    `needs_reference`: the requested metrics that compare with the source video; `needs_audio`: whether the
    generated videos must carry the speech (the sync metric).
    """
    checked = []
    for pair in pairs:
        info = probe_video(pair.generated)
        if needs_audio and not info.has_audio:
            raise InputError(f"{pair.generated} has no audio track, which the sync metric needs",
                             "evaluate the lip-synced video with its speech muxed in, or drop sync from --metrics")
        ref_info = None
        if needs_reference:
            if pair.reference is None:
                raise InputError(
                    f"{', '.join(needs_reference)} compare with the source video, but {pair.generated.name} has none",
                    "give the source videos with --reference / --reference-dir (or a .csv of pairs), "
                    "or leave those metrics out of --metrics",
                )
            ref_info = probe_video(pair.reference)
            if (ref_info.width, ref_info.height) != (info.width, info.height):
                raise InputError(
                    f"{pair.generated.name} is {info.width}x{info.height} but its reference {pair.reference.name} "
                    f"is {ref_info.width}x{ref_info.height}",
                    "compare a lip-synced video with the video it was made from (same frame size)",
                )
        checked.append(CheckedPair(pair, info, ref_info))
    return checked
