"""Whisper encoder and U-Net audio features (SPEC 3): parity with the published implementation, the per-frame
windows, the seamless 30 s segmentation, and loading openai-whisper checkpoints."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import AUDIO, DATA, GOLDEN, golden, key_list
from latentsync.audio import WhisperFeatures, load_audio
from latentsync.audio.mel import whisper_log_mel
from latentsync.audio.whisper import BAND_SECONDS, RAMP_SECONDS
from latentsync.models.whisper import WhisperDims, WhisperEncoder
from latentsync.errors import CheckpointError, InputError

TINY = WhisperDims(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4)


@pytest.fixture(scope="module")
def whisper() -> WhisperFeatures:
    return WhisperFeatures(GOLDEN / "whisper_random.pt")


@pytest.fixture(scope="module")
def speech() -> dict[int, np.ndarray]:
    return {i: load_audio(AUDIO / f"demo{i}_speech.flac") for i in (1, 2, 3)}


@pytest.mark.parametrize("name", ["demo1", "long"])
def test_reference_features_and_windows_match_golden(whisper, speech, name):
    expected = golden("whisper_io")
    wav = speech[1] if name == "demo1" else np.concatenate([speech[2], speech[3]])  # long: 38.4 s, crosses 30 s
    features = whisper.features(wav, segmenting="reference")
    assert features.dtype == torch.float32 and features.device.type == "cpu"
    assert features.shape == expected[f"{name}_features"].shape == (len(wav) // 320, 5, 64)
    feature_error = (features - expected[f"{name}_features"]).abs().max().item()

    num_frames = features.shape[0] // 2  # video frames at 25 fps
    # The published loop made 2 windows more than there are video frames; we return exactly num_frames.
    assert expected[f"{name}_num_chunks"].item() == num_frames + 2
    assert len(whisper.windows(features, num_frames)) == num_frames
    index = expected[f"{name}_chunk_index"]  # includes one of the 2 extra (clamped) windows
    windows = whisper.windows(features, int(index.max()) + 1)
    assert windows.shape[1:] == (50, 64)
    window_error = (windows[index] - expected[f"{name}_chunks"]).abs().max().item()
    print(f"whisper {name}: features max abs error {feature_error:.3g}, windows {window_error:.3g}")
    assert feature_error < 1e-4 and window_error < 1e-4


def test_windows_layout(whisper):
    features = torch.arange(7 * 5 * 2, dtype=torch.float32).reshape(7, 5, 2)
    windows = whisper.windows(features, 3)
    # frame 1: centre 2, encoder frames 2-4 .. 2+5 clamped to 0 .. 6, time-major then layer
    expected = features[[0, 0, 0, 1, 2, 3, 4, 5, 6, 6]].reshape(50, 2)
    torch.testing.assert_close(windows[1], expected, rtol=0, atol=0)
    # A chunk's windows equal the same frames' windows of the whole clip.
    torch.testing.assert_close(whisper.windows(features, 2, start=1), windows[1:3], rtol=0, atol=0)
    with pytest.raises(InputError):
        whisper.windows(features, 0)


def steps(features: torch.Tensor) -> torch.Tensor:
    """Size of the change from each encoder frame to the next (all layers)."""
    return (features[1:] - features[:-1]).flatten(1).norm(dim=1)


def test_seamless_removes_the_30s_jumps(whisper, speech):
    # 70 s of real speech (the three tracks, repeated): boundaries at 30 s and 60 s
    wav = np.concatenate([speech[2], speech[3], speech[1], speech[2], speech[3]])[: 70 * 16000]
    reference = whisper.features(wav, segmenting="reference")
    seamless = whisper.features(wav)
    assert seamless.shape == reference.shape == (len(wav) // 320, 5, 64)

    reach = int((BAND_SECONDS + RAMP_SECONDS) * 50) + 1  # frames a boundary may touch
    near_boundary = torch.zeros(len(reference), dtype=torch.bool)
    for boundary in (1500, 3000):
        near_boundary[boundary - reach : boundary + reach] = True
    torch.testing.assert_close(seamless[~near_boundary], reference[~near_boundary], rtol=0, atol=1e-6)

    ref_steps, seamless_steps = steps(reference), steps(seamless)
    for boundary in (1500, 3000):
        ref_jump = (ref_steps[boundary - 1] / ref_steps.median()).item()
        worst_seamless = (seamless_steps[boundary - reach : boundary + reach].max() / seamless_steps.median()).item()
        print(f"{boundary // 50} s boundary: step / median step = {ref_jump:.2f} (reference), "
              f"max over the band {worst_seamless:.2f} (seamless)")
        assert ref_jump > 3.0
        assert worst_seamless < 1.6
    assert (seamless_steps.max() / seamless_steps.median()).item() < 2.0  # nowhere a jump


def test_short_clip_is_the_same_in_both_modes(whisper, speech):
    wav = speech[1][:40000]
    torch.testing.assert_close(whisper.features(wav), whisper.features(wav, segmenting="reference"), rtol=0, atol=0)


def test_rejects_bad_input(whisper):
    with pytest.raises(InputError):
        whisper.features(np.zeros(100, np.float32))  # shorter than one encoder frame
    with pytest.raises(InputError):
        whisper.features(np.zeros(16000, np.float32), segmenting="overlap")


def test_tiny_encoder_keys_match_published():
    with torch.device("meta"):
        encoder = WhisperEncoder(TINY)
    built = {f"encoder.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert built == dict(key_list(DATA / "reference" / "whisper_tiny_encoder_keys.txt"))


def test_loads_openai_format_file(tmp_path: Path, speech):
    torch.manual_seed(0)
    state = {f"encoder.{k}": v.half() for k, v in WhisperEncoder(TINY).state_dict().items()}
    state["encoder.positional_embedding"] = torch.randn(1500, 384).half()  # any stored table must be used as is
    state["decoder.token_embedding.weight"] = torch.zeros(4, 8, dtype=torch.float16)  # ignored
    dims = {**asdict(TINY), "n_vocab": 4, "n_text_ctx": 448, "n_text_state": 8, "n_text_head": 1, "n_text_layer": 1}
    path = tmp_path / "tiny.pt"
    torch.save({"dims": dims, "model_state_dict": state}, path)

    whisper = WhisperFeatures(path)
    assert whisper.dims == TINY
    torch.testing.assert_close(whisper.encoder.positional_embedding, state["encoder.positional_embedding"].float())
    wav = speech[1][: 2 * 16000]
    features = whisper.features(wav)
    # The same weights run by hand on the padded 30 s log-mel: the first 100 encoder frames are the 2 s clip's.
    encoder = WhisperEncoder(TINY).eval()
    encoder.load_state_dict({k.removeprefix("encoder."): v.float() for k, v in state.items() if k.startswith("encoder.")})
    log_mel = whisper_log_mel(wav)
    with torch.no_grad():
        expected = encoder(torch.nn.functional.pad(log_mel, (0, 3000 - log_mel.shape[1]))[None])[0, :100]
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)
    windows = whisper.windows(features, 50)
    # Frame 10's tokens: encoder frames 16 .. 25 (centre 20, offsets -4 .. +5), each with its 5 layers, time-major.
    torch.testing.assert_close(windows[10], features[16:26].reshape(50, 384))
    assert windows.shape == (50, 50, 384)

    torch.save({"model_state_dict": state}, tmp_path / "no_dims.pt")
    with pytest.raises(CheckpointError):
        WhisperFeatures(tmp_path / "no_dims.pt")
    del state["encoder.blocks.3.mlp.2.bias"]
    torch.save({"dims": dims, "model_state_dict": state}, tmp_path / "incomplete.pt")
    with pytest.raises(CheckpointError, match="blocks.3.mlp.2.bias"):
        WhisperFeatures(tmp_path / "incomplete.pt")


@pytest.mark.gpu
def test_cuda_half_precision_is_close_to_cpu(whisper, speech):
    on_gpu = WhisperFeatures(GOLDEN / "whisper_random.pt", device="cuda", dtype=torch.float16)
    expected = whisper.features(speech[1], segmenting="reference")
    features = on_gpu.features(speech[1], segmenting="reference")
    assert features.dtype == torch.float32 and features.device.type == "cpu"
    relative = ((features - expected).abs().max() / expected.abs().max()).item()
    print(f"whisper fp16 on CUDA: max abs error / max abs value = {relative:.3g}")
    assert relative < 1e-2
