"""Faces: detection backends, choosing and following one face through a video, alignment and paste-back.

    detector = create_detector("auto")            # insightface if its weights are local, else mediapipe
    track = track_faces(frames, detector, FaceSelection(index=1))   # the second face from the left
    track.save("face_track.json")                 # inspect / edit, then reuse with FaceTrack.load
    aligner = FaceAligner(resolution=256)
    mats = aligner.matrices(track.points[track.present])

Names are imported on first use, so choosing a face or loading a track does not load torch or a detector.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "FaceAligner": ".align", "Detections": ".detectors", "FaceDetector": ".detectors", "create_detector": ".detectors",
    "FaceSelection": ".track", "FaceTrack": ".track", "track_faces": ".track", "detect_video_track": ".video",
    "load_video_track": ".video", "track_matrices": ".video",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
