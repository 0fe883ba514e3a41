"""Reading the audio track of any common media file as 16 kHz mono float32 samples (and writing a wav).

Decoding and resampling use PyAV (FFmpeg's decoders and its `swresample` resampler, the same resampler the
published system reached through the `ffmpeg` command line). Channels are averaged here, after resampling.
A file that already holds 16 kHz 16-bit samples is not resampled: its samples come back as exactly `int16 / 32768`.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from ..errors import InputError
from ..fileio import atomic_path, ffmpeg_reason, open_media
from ..timebase import SAMPLE_RATE


_CONVERT_HINT = "the file may be damaged or in an unsupported format; convert it to WAV, e.g. `ffmpeg -i IN -ar 16000 out.wav`"


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """The first audio track of `path` (wav, mp3, m4a, flac, ogg/opus, or a video's audio) as float32 mono 16 kHz.

    Raises InputError for a missing path, a directory, an unreadable file, a file without an audio track,
    and an audio track without samples. The file is only read.
    """
    path = Path(path)
    with open_media(path, "audio", _CONVERT_HINT) as container:
        if not container.streams.audio:
            raise InputError(f"{path} has no audio track", "pass --audio with a speech track")
        try:
            samples = _decode_resampled(container, container.streams.audio[0])
        except av.FFmpegError as exc:
            raise InputError(f"cannot decode the audio of {path}: {ffmpeg_reason(exc)}", _CONVERT_HINT) from exc
    if samples.size == 0:
        raise InputError(f"the audio track of {path} holds no samples", "pass a file with audible speech")
    return samples


def _decode_resampled(container: av.container.InputContainer, stream: av.AudioStream) -> np.ndarray:
    """Decode a stream, resample it to 16 kHz planar float (keeping its channels) and average the channels."""
    resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    for frame in container.decode(stream):
        chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
    chunks.extend(f.to_ndarray() for f in resampler.resample(None))  # flush the resampler's delay line
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks, axis=1).mean(axis=0, dtype=np.float32)  # (channels, samples) -> mono


def save_wav(path: str | os.PathLike, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Write float mono samples in [-1, 1] as a 16-bit PCM wav (atomically)."""
    pcm = np.clip(np.round(np.asarray(samples) * 32768), -32768, 32767).astype(np.int16)[None]  # inverse of load_audio
    path = Path(path)
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path
