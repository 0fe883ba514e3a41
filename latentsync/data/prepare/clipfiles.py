"""The clip files: aligned faces with their speech (work copy), and the kept clip with its audio shifted by the
SyncNet offset. Both appear atomically."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from ...audio import SAMPLE_RATE
from ...face import FaceAligner, FaceTrack, track_matrices
from ...fileio import atomic_path
from ...media import FPS, VideoWriter, read_batches

SAMPLES_PER_FRAME = round(SAMPLE_RATE / FPS)  # 640: one video frame of 16 kHz audio
WARP_CHUNK = 32  # frames aligned per call


def clip_audio(audio: np.ndarray, start: int, end: int, offset: int = 0) -> np.ndarray:
    """The speech of frames start .. end-1 delayed by `offset` frames (offset x 40 ms), silence where the source
    has none: sample n of the result is source sample (start - offset) * 640 + n.

    A positive SyncNet offset means the matching audio comes earlier than the picture; delaying it by the offset
    (as the published pipeline does with ffmpeg's -itsoffset) brings the offset to 0."""
    first, count = (start - offset) * SAMPLES_PER_FRAME, (end - start) * SAMPLES_PER_FRAME
    out = np.zeros(count, np.float32)
    lo, hi = max(first, 0), min(first + count, len(audio))
    if hi > lo:
        out[lo - first : hi - first] = audio[lo:hi]
    return out


def write_aligned_clip(
    video: str | os.PathLike, target: Path, track: FaceTrack, aligner: FaceAligner, start: int, end: int,
    audio: np.ndarray,
) -> None:
    """Frames start .. end-1 of the video aligned to R x R (H.264, 25 fps) with their speech (AAC)."""
    mats = track_matrices(aligner, track, start, end)
    size = aligner.resolution
    with VideoWriter(target, size, size, fps=FPS, audio=clip_audio(audio, start, end)) as writer:
        done = 0
        for frames in read_batches(video, WARP_CHUNK, FPS, np.arange(start, end)):
            writer.write(aligner.warp(frames, mats[done : done + len(frames)]))
            done += len(frames)


def publish_clip(aligned: Path, target: Path, speech: np.ndarray) -> None:
    """`target` (.mp4): the aligned clip's video stream copied as it is, with `speech` (16 kHz mono, as long as
    the clip: `clip_audio`) as its AAC track."""
    with av.open(str(aligned)) as source, atomic_path(target) as tmp:
        video_in = source.streams.video[0]
        with av.open(str(tmp), "w", options={"movflags": "+faststart"}) as out:
            video_out = out.add_stream_from_template(video_in)
            audio_out = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
            for packet in source.demux(video_in):
                if not packet.size:  # the demuxer's end-of-stream marker
                    continue
                packet.stream = video_out
                out.mux(packet)
            frame = av.AudioFrame.from_ndarray(speech.astype(np.float32)[None], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, 0
            out.mux(audio_out.encode(frame))
            out.mux(audio_out.encode(None))
