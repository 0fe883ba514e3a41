"""Faces: detection backends, choosing and following one face through a video, alignment and paste-back.

    detector = create_detector("auto")            # insightface if its weights are local, else mediapipe
    track = track_faces(frames, detector, FaceSelection(index=1))   # the second face from the left
    track.save("face_track.json")                 # inspect / edit, then reuse with FaceTrack.load
    aligner = FaceAligner(resolution=256)
    mats = aligner.matrices(track.points[track.present])
"""

from .align import FaceAligner
from .detectors import Detections, FaceDetector, create_detector
from .track import FaceSelection, FaceTrack, track_faces
from .video import detect_video_track, load_video_track, track_matrices

__all__ = [
    "Detections", "FaceAligner", "FaceDetector", "FaceSelection", "FaceTrack", "create_detector", "detect_video_track",
    "load_video_track", "track_faces", "track_matrices",
]
