"""The time bases every stage shares (SPEC section 2): video is processed at 25 fps, audio at 16 kHz mono."""

FPS = 25.0
SAMPLE_RATE = 16000
