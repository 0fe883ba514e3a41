"""Media I/O for the pipeline: probing and streaming video frames, the 25 fps frame schedule, and the H.264 writer."""

from ..timebase import FPS
from .timeline import frame_schedule
from .video import VideoInfo, probe_video, read_batches, read_frames
from .writer import VideoWriter, check_output_path

__all__ = ["FPS", "VideoInfo", "VideoWriter", "check_output_path", "frame_schedule", "probe_video", "read_batches", "read_frames"]
