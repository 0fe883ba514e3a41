"""The frame timeline: which source frame each output frame shows.

Two rules live here and nowhere else:
- resampling to the processing rate (25 fps): output frame k, at time k / fps, shows the source frame whose
  presentation time is nearest (ties go to the earlier frame); this works unchanged for variable frame rates;
- covering the speech track (SPEC 9): the video is cut when the speech is shorter, and played forward, backward,
  forward... (ping-pong, whole reversed copies as published, so each turning frame shows twice) when it is longer.
"""

from __future__ import annotations

import math

import numpy as np

# Output frames whose start lies within 1% of a frame of the video's end are dropped: this absorbs timestamp
# rounding (millisecond time bases), so a 2 s clip gives exactly 50 frames at 25 fps.
_END_TOLERANCE = 0.01


def output_frame_count(duration: float, fps: float) -> int:
    """Number of output frames at `fps` for a video lasting `duration` seconds: those with k / fps < duration.

    Always at least 1, so a single-picture video yields one frame.
    """
    return max(1, math.ceil(duration * fps - _END_TOLERANCE))


def nearest_source_frames(times: np.ndarray, count: int, fps: float) -> np.ndarray:
    """Source frame index for output frames k = 0..count-1 (time k / fps): the frame with the nearest timestamp.

    `times` are the source frames' presentation times in seconds, increasing, relative to the first frame.
    Ties go to the earlier frame.
    """
    times = np.asarray(times, dtype=np.float64)
    t = np.arange(count) / fps
    after = np.clip(np.searchsorted(times, t, side="left"), 0, len(times) - 1)  # first frame at or after t
    before = np.maximum(after - 1, 0)
    # The epsilon keeps exact ties (e.g. 12.5 fps sources) stable against float rounding.
    take_before = (t - times[before]) <= (times[after] - t) + 1e-9
    return np.where(take_before, before, after).astype(np.int64)


def frame_schedule(num_video_frames: int, num_output_frames: int) -> np.ndarray:
    """Video frame index for each output frame: a cut when the video is long enough, ping-pong otherwise.

    Ping-pong joins whole forward and reversed copies, as published: 0, ..., n-1, n-1, ..., 0, 0, 1, ...
    (each turning frame is shown twice, a one-frame hold).
    """
    if num_video_frames < 1:
        raise ValueError(f"a schedule needs at least one video frame, got {num_video_frames}")
    if num_output_frames < 0:
        raise ValueError(f"the number of output frames must be >= 0, got {num_output_frames}")
    phase = np.arange(num_output_frames, dtype=np.int64) % (2 * num_video_frames)
    return np.where(phase < num_video_frames, phase, 2 * num_video_frames - 1 - phase)
