"""load_audio: every common container/codec, rate and channel count comes back as 16 kHz mono float32."""

from __future__ import annotations

import hashlib
import wave
from pathlib import Path

import av
import librosa
import numpy as np
import pytest

from conftest import AUDIO, MEDIA
from latentsync.audio import SAMPLE_RATE, load_audio
from latentsync.errors import InputError

SPEECH = AUDIO / "demo1_speech.flac"


def raw_int16(path: Path) -> np.ndarray:
    """The 16-bit samples of a mono file, decoded by PyAV without any conversion (the ground truth)."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray() for f in container.decode(audio=0)]
    assert frames[0].dtype == np.int16
    return np.concatenate(frames, axis=1)[0]


def write_media(path: Path, samples: np.ndarray, rate: int, codec: str, video_codec: str | None = None) -> Path:
    """Encode (channels, n) float samples at `rate` with PyAV, optionally beside a small video stream."""
    samples = np.ascontiguousarray(np.atleast_2d(samples), dtype=np.float32)
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as out:
        if video_codec:
            video = out.add_stream(video_codec, rate=25)
            video.width = video.height = 64
            video.pix_fmt = "yuv420p"
        stream = out.add_stream(codec, rate=rate, layout=layout)
        ctx = stream.codec_context
        to_encoder = av.AudioResampler(format=ctx.format, layout=layout, rate=rate, frame_size=ctx.frame_size or 1024)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
        frame.sample_rate = rate
        for f in to_encoder.resample(frame) + to_encoder.resample(None):
            out.mux(stream.encode(f))
        out.mux(stream.encode(None))
        if video_codec:
            for i in range(int(samples.shape[1] / rate * 25)):
                out.mux(video.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), i, np.uint8), format="rgb24")))
            out.mux(video.encode(None))
    return path


def aligned_similarity(decoded: np.ndarray, original: np.ndarray, max_lag: int = 2000) -> tuple[float, float]:
    """(correlation, relative RMS error) after removing a codec delay of up to `max_lag` samples."""
    probe = original[max_lag : max_lag + 40000]
    lag = int(np.argmax(np.correlate(decoded[: 40000 + 2 * max_lag], probe, "valid"))) - max_lag
    decoded = decoded[max(0, lag) :]
    original = original[max(0, -lag) :]
    n = min(len(decoded), len(original))
    corr = float(np.corrcoef(decoded[:n], original[:n])[0, 1])
    rel_rms = float(np.sqrt(np.mean((decoded[:n] - original[:n]) ** 2) / np.mean(original[:n] ** 2)))
    return corr, rel_rms


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return raw_int16(SPEECH).astype(np.float32) / 32768


def test_16bit_16khz_is_exact(tmp_path, speech):
    pcm = raw_int16(SPEECH)
    wav_path = tmp_path / "speech.wav"
    with wave.open(str(wav_path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    for path in (wav_path, SPEECH):
        loaded = load_audio(path)
        assert loaded.dtype == np.float32 and loaded.ndim == 1
        np.testing.assert_array_equal(loaded, pcm.astype(np.float32) / 32768)


def test_wav_44k_stereo_is_resampled_and_channels_averaged(tmp_path, speech):
    # Left and right differ by another speaker's voice, which averaging must cancel.
    other = load_audio(AUDIO / "demo2_speech.flac")[: len(speech)] * 0.5
    stereo = np.stack([speech + other, speech - other]) * 0.6
    stereo_44k = librosa.resample(stereo, orig_sr=SAMPLE_RATE, target_sr=44100)
    path = write_media(tmp_path / "stereo.wav", stereo_44k, 44100, "pcm_s16le")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = load_audio(path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # the input is never modified
    assert abs(len(loaded) - len(speech)) <= 2
    corr, rel_rms = aligned_similarity(loaded, speech * 0.6)
    print(f"44.1 kHz stereo wav: correlation {corr:.5f}, relative RMS error {rel_rms:.4f}")
    assert corr > 0.999 and rel_rms < 0.03


@pytest.mark.parametrize(
    "name, rate, channels, codec, video_codec, min_corr",
    [
        ("speech.flac", 22050, 1, "flac", None, 0.999),
        ("speech.mp3", 16000, 1, "libmp3lame", None, 0.99),
        ("speech.m4a", 44100, 2, "aac", None, 0.98),
        ("speech.ogg", 48000, 1, "libopus", None, 0.99),
        ("speech.mkv", 48000, 2, "libopus", "libx264", 0.99),
    ],
)
def test_formats(tmp_path, speech, name, rate, channels, codec, video_codec, min_corr):
    resampled = librosa.resample(speech, orig_sr=SAMPLE_RATE, target_sr=rate) if rate != SAMPLE_RATE else speech
    path = write_media(tmp_path / name, np.stack([resampled] * channels), rate, codec, video_codec)
    loaded = load_audio(path)
    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert abs(len(loaded) - len(speech)) < 0.05 * SAMPLE_RATE  # codec padding only
    corr, rel_rms = aligned_similarity(loaded, speech)
    print(f"{name} ({rate} Hz, {channels} ch): correlation {corr:.5f}, relative RMS error {rel_rms:.4f}")
    assert corr > min_corr


def test_audio_track_of_mp4():
    loaded = load_audio(MEDIA / "demo1_360p.mp4")  # AAC 44.1 kHz stereo beside H.264
    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert abs(len(loaded) / SAMPLE_RATE - 2.0) < 0.1
    assert 0.01 < np.abs(loaded).max() <= 1.0


def expect_input_error(path: Path, *fragments: str) -> None:
    with pytest.raises(InputError) as info:
        load_audio(path)
    text = str(info.value)
    assert info.value.hint
    for fragment in fragments:
        assert fragment in text


def test_missing_path_and_directory(tmp_path):
    expect_input_error(tmp_path / "nothing.wav", "not found")
    expect_input_error(tmp_path, "directory")


def test_corrupt_files(tmp_path):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not a media file " * 200)
    expect_input_error(garbage, "cannot")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes((MEDIA / "demo1_360p.mp4").read_bytes()[:3000])
    expect_input_error(truncated, "cannot")


def test_video_without_audio(tmp_path):
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        for i in range(5):
            out.mux(video.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")))
        out.mux(video.encode(None))
    expect_input_error(path, "no audio track", "--audio")


def test_audio_stream_without_samples(tmp_path):
    path = tmp_path / "empty.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
    expect_input_error(path, "no samples")


def test_save_wav_round_trips_exactly(tmp_path):
    from latentsync.audio import save_wav

    wav = load_audio(AUDIO / "demo1_speech.flac")
    np.testing.assert_array_equal(load_audio(save_wav(tmp_path / "copy.wav", wav)), wav)
