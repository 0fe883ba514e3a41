"""Derive the project's small test fixtures and the bundled demo from the full-size shared assets.

Run once by a maintainer (the outputs are committed); the project never reads ../shared at run or test time:
    python scripts/make_fixtures.py ../shared/assets
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def transcode(src: Path, dst: Path, seconds: float, width: int, height: int, crf: int, audio: bool = True) -> None:
    """Cut the first `seconds` of `src`, scale to width x height, H.264 video and AAC audio (if any)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        fps = vin.average_rate
        vout = out.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": "medium"})
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        ain = inp.streams.audio[0] if (audio and inp.streams.audio) else None
        aout = out.add_stream("aac", rate=ain.rate) if ain else None
        streams = [s for s in (vin, ain) if s is not None]
        # Timestamps are renumbered from 0 in each stream's own time base (frames, samples): PyAV writes a
        # missing pts as 0, which would leave every packet at time 0.
        video_count = audio_samples = 0
        for packet in inp.demux(streams):
            for frame in packet.decode():
                if frame.time is None or frame.time >= seconds:
                    continue
                if packet.stream is vin:
                    frame = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
                    frame.pts, frame.time_base = video_count, 1 / fps
                    video_count += 1
                    out.mux(vout.encode(frame))
                else:
                    frame.pts, frame.time_base = audio_samples, Fraction(1, ain.rate)
                    audio_samples += frame.samples
                    out.mux(aout.encode(frame))
        out.mux(vout.encode())
        if aout:
            out.mux(aout.encode())


def write_flac(src: Path, dst: Path, seconds: float | None = None) -> None:
    """Copy a 16-bit mono PCM wav losslessly to FLAC (optionally only its first seconds)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp:
        rate = inp.streams.audio[0].rate
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in inp.decode(audio=0)])
    if seconds is not None:
        samples = samples[: int(seconds * rate)]
    with av.open(str(dst), "w") as out:
        aout = out.add_stream("flac", rate=rate, layout="mono", format="s16")
        frame = av.AudioFrame.from_ndarray(samples.astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = rate
        out.mux(aout.encode(frame))
        out.mux(aout.encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("assets", type=Path, help="folder with demoN_video.mp4, demoN_audio.wav")
    args = ap.parse_args()
    media = ROOT / "tests" / "data" / "media"
    for i in (1, 2, 3):
        video = args.assets / f"demo{i}_video.mp4"
        transcode(video, media / f"demo{i}_360p.mp4", seconds=2.0, width=360, height=640, crf=23)
        transcode(video, media / f"demo{i}_1080p.mp4", seconds=1.0, width=1080, height=1920, crf=30)
        # Longer clips for the data preparation and training tests.
        transcode(video, media / f"demo{i}_6s.mp4", seconds=6.0, width=288, height=512, crf=26)
        write_flac(args.assets / f"demo{i}_audio.wav", ROOT / "tests" / "data" / "audio" / f"demo{i}_speech.flac")
    demo = ROOT / "latentsync" / "assets" / "demo"
    transcode(args.assets / "demo1_video.mp4", demo / "demo_video.mp4", seconds=4.0, width=540, height=960, crf=26)
    write_flac(args.assets / "demo1_audio.wav", demo / "demo_speech.flac", seconds=4.0)


if __name__ == "__main__":
    main()
