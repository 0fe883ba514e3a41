"""Face detector backends: InsightFace pre/post-processing on hand-built ONNX graphs, MediaPipe on real video,
the anchor-point definitions, backend choice and bad frames."""

from __future__ import annotations


import numpy as np
import pytest

from conftest import GOLDEN, fixture_frames
from latentsync.errors import InputError, MissingWeightsError
from latentsync.face import create_detector, track_faces
from latentsync.face.detectors.insightface import (
    DET_FILE,
    LANDMARK_FILE,
    STRIDES,
    InsightFaceDetector,
    letterbox,
    to_blob,
)
from latentsync.face.landmarks import anchors_from_106, anchors_from_mesh, round_anchors
from latentsync.testing.face_onnx import constant_landmarks, constant_scrfd, random_landmarks, random_scrfd



# ---------------------------------------------------------------------------------------------- ONNX graphs


def test_anchors_from_106_on_known_points():
    # Point i at (i, 2 i): each anchor is the mean of its indices, so the expected values are exact.
    pts = np.stack([np.arange(106), 2 * np.arange(106)], axis=1).astype(np.float64)
    anchors = anchors_from_106(pts)
    expected = [[(43 + 48 + 49 + 51 + 50) / 5, 0], [103, 0], [(74 + 77 + 83 + 86) / 4, 0]]
    expected = np.array(expected)
    expected[:, 1] = 2 * expected[:, 0]
    np.testing.assert_allclose(anchors, expected)
    assert round_anchors(anchors).tolist() == [[48, 96], [103, 206], [80, 160]]


def test_anchors_from_106_rounds_points_first_like_published():
    pts = np.zeros((2, 106, 2))
    pts[:, [43, 48, 49, 51, 50], 0] = 0.4  # each rounds to 0, so the mean is 0 (not 0.4)
    pts[:, 101:106, 1] = 1.6  # each rounds to 2
    anchors = anchors_from_106(pts)
    assert anchors.shape == (2, 3, 2)
    assert anchors[0, 0, 0] == 0 and anchors[0, 1, 1] == 2


def test_mesh_anchors_are_brow_and_nose_means():
    mesh = np.zeros((468, 2))
    mesh[[104, 105]] = [(9, 20), (11, 20)]
    mesh[[333, 334]] = [(50, 21), (50, 23)]
    mesh[[195, 197]] = [(30, 35), (30, 45)]
    np.testing.assert_allclose(anchors_from_mesh(mesh), [[10, 20], [50, 22], [30, 40]])


# ------------------------------------------------------------------------------------- insightface backend


def test_blob_is_bgr_and_normalised():
    red = np.zeros((4, 6, 3), np.uint8)
    red[..., 0] = 255
    blob = to_blob(red, 127.5, 128.0)
    assert blob.shape == (1, 3, 4, 6) and blob.dtype == np.float32
    np.testing.assert_allclose(blob[0, 2], (255 - 127.5) / 128)  # red is the last channel: BGR
    np.testing.assert_allclose(blob[0, 0], -127.5 / 128)


def test_letterbox_keeps_aspect_in_top_left():
    frame = np.full((640, 360, 3), 200, np.uint8)  # portrait
    canvas, scale = letterbox(frame, (512, 512))
    assert canvas.shape == (512, 512, 3) and scale == 512 / 640
    assert (canvas[:, :288] == 200).all() and (canvas[:, 288:] == 0).all()


def _head(size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    n = (size // stride) ** 2 * 2
    return np.full((n, 1), 0.05, np.float32), np.zeros((n, 4), np.float32)


def _anchor(size: int, stride: int, row: int, col: int, anchor: int) -> int:
    return (row * (size // stride) + col) * 2 + anchor


def test_insightface_decodes_constant_graph_exactly(tmp_path):
    size = 640
    heads = {s: _head(size, s) for s in STRIDES}
    # Face A: stride 8, cell (row 20, col 30) -> anchor centre (240, 160); distances in stride units.
    heads[8][0][_anchor(size, 8, 20, 30, 1)] = 0.9
    heads[8][1][_anchor(size, 8, 20, 30, 1)] = (5, 6, 7, 8)
    # A near-duplicate of A with a lower score: removed by NMS.
    heads[8][0][_anchor(size, 8, 20, 31, 0)] = 0.8
    heads[8][1][_anchor(size, 8, 20, 31, 0)] = (6, 6, 6, 8)
    # Face B: stride 32, cell (5, 15) -> centre (480, 160).
    heads[32][0][_anchor(size, 32, 5, 15, 0)] = 0.7
    heads[32][1][_anchor(size, 32, 5, 15, 0)] = (2, 2, 2, 3)
    # Face C exactly at the threshold (kept), and one below it (dropped).
    heads[16][0][_anchor(size, 16, 15, 5, 1)] = 0.5
    heads[16][1][_anchor(size, 16, 15, 5, 1)] = (1, 1, 1, 1)
    heads[16][0][_anchor(size, 16, 30, 30, 0)] = 0.49
    heads[16][1][_anchor(size, 16, 30, 30, 0)] = (2, 2, 2, 2)
    pred = np.random.default_rng(0).uniform(-0.9, 0.9, (106, 2)).astype(np.float32)
    det = InsightFaceDetector(
        constant_scrfd(tmp_path / "det.onnx", size, heads), constant_landmarks(tmp_path / "lmk.onnx", pred)
    )
    assert det.det_hw == (640, 640)  # a fixed-size model dictates the detection size

    frame = np.zeros((720, 1280, 3), np.uint8)  # letterboxed to 640 x 360: scale 0.5
    found = det.detect(frame)
    canvas_boxes = np.array([[200, 112, 296, 224], [416, 96, 544, 256], [64, 224, 96, 256]], np.float64)
    np.testing.assert_allclose(found.boxes, canvas_boxes * 2, atol=1e-3)
    np.testing.assert_allclose(found.scores, [0.9, 0.7, 0.5], atol=1e-6)

    # Landmarks: the crop maps the box's larger side * 1.5 to 192 px around its centre, and the model's
    # output p in [-1, 1] is crop pixel (p + 1) * 96, so the frame point is centre + p * 96 / scale.
    for box, anchors in zip(found.boxes.astype(np.float64), found.points):
        scale = 192 / (max(box[2] - box[0], box[3] - box[1]) * 1.5)
        centre = (box[:2] + box[2:]) / 2
        lmk106 = centre + pred.astype(np.float64) * 96 / scale
        np.testing.assert_allclose(det.landmarks106(frame, box), lmk106, atol=1e-3)
        np.testing.assert_allclose(anchors, anchors_from_106(lmk106), atol=1e-3)


def test_insightface_random_weights_via_checkpoint_dir(tmp_path):
    folder = tmp_path / "auxiliary/models/buffalo_l"  # the published layout
    folder.mkdir(parents=True)
    random_scrfd(folder / DET_FILE, score_bias=-0.7)
    random_landmarks(folder / LANDMARK_FILE)
    det = create_detector("auto", checkpoint_dir=tmp_path)
    assert det.name == "insightface" and det.det_hw == (512, 512)
    frame = fixture_frames("demo1_360p.mp4", 1)[0]
    found = det.detect(frame)
    assert len(found) > 0, "these random weights give some detections"
    assert found.boxes.shape[1:] == (4,) and found.points.shape[1:] == (3, 2)
    assert np.all(found.scores >= 0.5) and np.all(np.diff(found.scores) <= 0)
    assert np.all(found.boxes[:, 2:] > found.boxes[:, :2])
    # Anchors come from the landmark model's output in [-1, 1]: inside its crop around the box.
    w = np.maximum(found.boxes[:, 2] - found.boxes[:, 0], found.boxes[:, 3] - found.boxes[:, 1])
    centre = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
    assert np.all(np.abs(found.points - centre[:, None]) <= 0.75 * w[:, None, None] + 1)


def test_insightface_never_fires_on_low_scores_and_tracks_nothing(tmp_path):
    det = InsightFaceDetector(
        random_scrfd(tmp_path / "d.onnx", score_bias=-20.0), random_landmarks(tmp_path / "l.onnx")
    )
    frames = fixture_frames("demo2_360p.mp4", 3)
    assert len(det.detect(frames[0])) == 0
    track = track_faces(frames, det)
    assert track.counts == {"found": 0, "interpolated": 0, "absent": 3} and track.backend == "insightface"


def test_auto_falls_back_to_mediapipe_and_offline_insightface_fails(tmp_path):
    det = create_detector("auto", checkpoint_dir=tmp_path)
    assert det.name == "mediapipe"
    det.close()
    with pytest.raises(MissingWeightsError, match="det_10g"):
        create_detector("insightface", checkpoint_dir=tmp_path, offline=True)
    with pytest.raises(InputError, match="unknown face detector"):
        create_detector("dlib")


# ---------------------------------------------------------------------------------------- mediapipe backend


@pytest.fixture(scope="module")
def mediapipe_detector():
    det = create_detector("mediapipe")
    yield det
    det.close()


def _finds_face_on_every_frame(detector, name: str) -> None:
    frames = fixture_frames(name)
    track = track_faces(frames, detector)
    assert track.counts == {"found": len(frames), "interpolated": 0, "absent": 0}, name
    # The anchors are where a face's are: brows side by side above the nose, inside the face box.
    brow_l, brow_r, nose = track.points[:, 0], track.points[:, 1], track.points[:, 2]
    assert np.all(brow_l[:, 0] < nose[:, 0]) and np.all(nose[:, 0] < brow_r[:, 0])
    assert np.all(nose[:, 1] > np.maximum(brow_l[:, 1], brow_r[:, 1]))
    box = track.boxes
    assert np.all((track.points[..., 0] > box[:, None, 0]) & (track.points[..., 0] < box[:, None, 2]))
    assert np.all((track.points[..., 1] > box[:, None, 1]) & (track.points[..., 1] < box[:, None, 3]))


@pytest.mark.parametrize("name", ["demo1_360p.mp4", "demo2_360p.mp4", "demo3_360p.mp4"])
def test_mediapipe_finds_the_face_on_every_360p_frame(mediapipe_detector, name):
    _finds_face_on_every_frame(mediapipe_detector, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["demo1_1080p.mp4", "demo2_1080p.mp4", "demo3_1080p.mp4"])
def test_mediapipe_finds_the_face_on_every_1080p_frame(mediapipe_detector, name):
    _finds_face_on_every_frame(mediapipe_detector, name)


def test_mediapipe_anchors_match_published_insightface_anchors(mediapipe_detector):
    # The golden file holds the published (InsightFace) anchors of demo1 frames 0-5, in a 640 x 640 crop
    # whose top-left corner is (300, 400) of the 1080 x 1920 frame; the 360p fixture is the same video / 3.
    from safetensors.numpy import load_file

    reference = load_file(str(GOLDEN / "affine_io.safetensors"))["landmarks3"] + np.array([300, 400])
    brow_distance = np.linalg.norm(reference[:, 1] - reference[:, 0], axis=1).mean()  # about 105 px
    for name, scale in (("demo1_1080p.mp4", 1), ("demo1_360p.mp4", 3)):
        mediapipe_detector.reset()
        ours = np.stack([mediapipe_detector.detect_next(f).points[0] for f in fixture_frames(name, 6)]) * scale
        error = ours - reference
        assert np.linalg.norm(error, axis=2).mean() < 0.06 * brow_distance, name  # InsightFace jitters as much
        assert np.linalg.norm(error.mean(axis=0), axis=1).max() < 0.05 * brow_distance, name  # no clear bias
    mediapipe_detector.reset()


# --------------------------------------------------------------------------------------------- bad frames


def test_grayscale_frames_are_converted(mediapipe_detector):
    frame = fixture_frames("demo2_360p.mp4", 1)[0]
    gray = (frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    for variant in (gray, gray[:, :, None]):
        found = mediapipe_detector.detect(variant)
        assert len(found) == 1


def test_tiny_and_invalid_frames(mediapipe_detector):
    frame = fixture_frames("demo1_360p.mp4", 1)[0]
    import cv2

    tiny = cv2.resize(frame, (36, 64), interpolation=cv2.INTER_AREA)
    assert len(mediapipe_detector.detect(tiny)) in (0, 1)
    assert len(mediapipe_detector.detect(np.zeros((64, 64, 3), np.uint8))) == 0
    assert len(mediapipe_detector.detect(np.zeros((1, 1), np.uint8))) == 0
    with pytest.raises(InputError, match="uint8"):
        mediapipe_detector.detect(frame.astype(np.float32))
    with pytest.raises(InputError, match="shape"):
        mediapipe_detector.detect(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(InputError, match="empty"):
        mediapipe_detector.detect(np.zeros((0, 8, 3), np.uint8))


def test_face_cut_by_the_frame_edge_does_not_crash(mediapipe_detector):
    frames = fixture_frames("demo1_360p.mp4", 10)
    cut = [np.ascontiguousarray(f[:, 194:]) for f in frames]  # the cut runs through the middle of the face
    found = mediapipe_detector.detect(cut[0])
    assert np.isfinite(found.boxes).all() and np.isfinite(found.points).all()
    track = track_faces(cut, mediapipe_detector)
    assert len(track) == 10 and sum(track.counts.values()) == 10
