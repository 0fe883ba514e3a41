"""latentsync: audio-driven lip sync of real videos, compatible with the LatentSync 1.5 / 1.6 weights."""

__version__ = "0.1.0"
