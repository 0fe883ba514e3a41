"""SyncNet mel (SPEC 4) against the published implementation, and the per-16-frame windows cut from it."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import AUDIO, golden
from latentsync.audio import load_audio, mel_window, syncnet_mel
from latentsync.errors import InputError


@pytest.fixture(scope="module")
def mel() -> np.ndarray:
    return syncnet_mel(load_audio(AUDIO / "demo1_speech.flac"))


def test_matches_golden(mel):
    expected = golden("syncnet_mel")["mel"].numpy()
    assert mel.shape == expected.shape == (80, 769) and mel.dtype == np.float32
    error = np.abs(mel - expected).max()
    print(f"syncnet mel max abs error: {error:.3g}")
    assert error < 1e-4
    assert mel.min() >= -4 and mel.max() <= 4 and mel.std() > 0.5  # real speech spans the range


def test_window_columns(mel):
    for start_frame in (0, 1, 7, 100, 223):
        window = mel_window(mel, start_frame)
        first = int(80 * start_frame / 25)
        assert window.shape == (80, 52)
        np.testing.assert_array_equal(window, mel[:, first : first + 52])
    assert mel_window(mel, 10, num_frames=25).shape == (80, 80)  # the 25-frame SyncNet variant


def test_window_past_the_end_is_padded_with_silence(mel):
    window = mel_window(mel, 230)  # starts at column 736: 33 real columns of 52
    np.testing.assert_array_equal(window[:, :33], mel[:, 736:])
    assert (window[:, 33:] == -4).all()


@pytest.mark.parametrize("start_frame", [-1, 241])
def test_window_outside_the_audio_raises(mel, start_frame):
    with pytest.raises(InputError):
        mel_window(mel, start_frame)


def test_rejects_bad_samples():
    with pytest.raises(InputError):
        syncnet_mel(np.zeros((2, 16000), np.float32))
    with pytest.raises(InputError):
        syncnet_mel(np.full(16000, np.nan, np.float32))
