"""Audio: reading speech files, Whisper features for the U-Net, and the SyncNet mel.

Names are imported on first use, so reading a speech file does not load torch.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "SAMPLE_RATE": ".io", "load_audio": ".io", "save_wav": ".io", "mel_window": ".mel", "syncnet_mel": ".mel",
    "WhisperFeatures": ".whisper",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
