"""User-facing errors: one clear sentence plus a hint that says what to do.

The command line prints these as two lines instead of a traceback; anything else is a bug.
"""


class LatentSyncError(Exception):
    """An error caused by the user's input or environment, with a hint on how to fix it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class InputError(LatentSyncError):
    """A media file or argument given by the user cannot be used."""


class CheckpointError(LatentSyncError):
    """A weights file is missing, unreadable or does not fit the model."""


class MissingWeightsError(CheckpointError):
    """Weights are not available locally and may not be downloaded."""


class NoFaceError(LatentSyncError):
    """No usable face was found where one is required."""
