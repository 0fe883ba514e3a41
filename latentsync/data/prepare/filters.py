"""The two model filters behind one small interface: `SyncFilter(clip) -> (offset, confidence)` with the original
SyncNet on S3FD face tracks, and `QualityFilter(clip) -> score` with HyperIQA on the first, middle and last frames.
The models come from `latentsync.evaluation` (published weights, or random ones of the same format in tests)."""

from __future__ import annotations

import os

from ...errors import LatentSyncError


class NoSyncFace(LatentSyncError):
    """SyncNet's face tracker found no face track of the required length in the clip."""


class SyncFilter:
    """Offset and confidence of a clip, as the published sync filter computes them."""

    def __init__(self, syncnet_path: str | os.PathLike, s3fd_path: str | os.PathLike, device: str = "cpu"):
        from ...evaluation import load_s3fd, load_syncnet_v2

        self.device = device
        self.syncnet = load_syncnet_v2(syncnet_path, device=device)
        self.detector = load_s3fd(s3fd_path, device=device)

    def __call__(self, clip: str | os.PathLike) -> tuple[int, float]:
        from ...evaluation import score_video

        scored = score_video(clip, self.syncnet, self.detector, device=self.device)
        if not scored.found_face:
            raise NoSyncFace(scored.reason)
        return int(scored.combined.offset), float(scored.combined.sync_c)


class QualityFilter:
    """HyperIQA score of a clip as the published filter computes it: the mean over its first, middle and last
    frames, each centre-cropped to 224 x 224 (the published filter ran on 256 px clips)."""

    def __init__(self, hyperiqa_path: str | os.PathLike, device: str = "cpu"):
        from ...evaluation import load_hyperiqa

        self.model = load_hyperiqa(hyperiqa_path, device=device)

    def __call__(self, clip: str | os.PathLike) -> float:
        from ...evaluation.hyperiqa import read_iqa_frames

        return float(self.model.score(read_iqa_frames(clip)))
