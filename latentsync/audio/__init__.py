"""Audio: reading speech files, Whisper features for the U-Net, and the SyncNet mel."""

from .io import SAMPLE_RATE, load_audio, save_wav
from .mel import mel_window, syncnet_mel
from .whisper import WhisperFeatures

__all__ = ["SAMPLE_RATE", "WhisperFeatures", "load_audio", "mel_window", "save_wav", "syncnet_mel"]
