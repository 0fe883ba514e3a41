"""Face selection, tracking and gap bridging (scripted detections and real video), align/paste round trip,
and saving face tracks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from latentsync.errors import InputError
from latentsync.face import Detections, FaceAligner, FaceSelection, FaceTrack, create_detector, track_faces
from latentsync.face.detectors import FaceDetector
from conftest import fixture_frames, psnr

# ------------------------------------------------------------------------------------ scripted detections


def face(x1: float, y1: float, w: float = 60, h: float = 80, score: float = 0.9) -> tuple:
    return (x1, y1, x1 + w, y1 + h, score)


def anchors_of(box) -> np.ndarray:
    x1, y1, x2, y2 = box[:4]
    w, h = x2 - x1, y2 - y1
    return np.array([[x1 + 0.3 * w, y1 + 0.3 * h], [x1 + 0.7 * w, y1 + 0.3 * h], [x1 + 0.5 * w, y1 + 0.55 * h]])


class Scripted(FaceDetector):
    """Returns scripted faces per frame; the frame index is read from the first two pixels."""

    name = "scripted"

    def __init__(self, script: dict[int, list[tuple]]):
        self.script = script
        self.calls: list[int] = []

    def _detect(self, frame: np.ndarray) -> Detections:
        index = int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])
        self.calls.append(index)
        faces = self.script.get(index, [])
        return Detections.stack([f[:4] for f in faces], [f[4] for f in faces], [anchors_of(f) for f in faces])


def blank_frames(n: int, width: int = 1280, height: int = 720):
    for i in range(n):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[0, 0, :2] = (i % 256, i // 256)
        yield frame


def run(script, n, selection=None, **kw) -> FaceTrack:
    return track_faces(blank_frames(n, **kw.pop("size", {})), Scripted(script), selection, **kw)


def test_short_gaps_are_interpolated_long_ones_absent():
    n = 30
    script = {i: [face(100 + 2 * i, 50)] for i in range(n)}
    for i in [0, 1, 5, 6, 7] + list(range(12, 20)) + [29]:
        del script[i]
    track = run(script, n, FaceSelection(max_gap=4))
    assert len(track) == n
    assert np.flatnonzero(track.interpolated).tolist() == [5, 6, 7]
    assert np.flatnonzero(~track.present).tolist() == [0, 1] + list(range(12, 20)) + [29]
    assert track.counts == {"found": 16, "interpolated": 3, "absent": 11}
    # Interpolation between frames 4 and 8 of a face moving 2 px per frame is exact.
    for i in (5, 6, 7):
        np.testing.assert_allclose(track.boxes[i], face(100 + 2 * i, 50)[:4], atol=1e-4)
        assert track.points[i].tolist() == np.round(anchors_of(face(100 + 2 * i, 50))).astype(int).tolist()
    assert track.points.dtype == np.int32 and (track.points[~track.present] == 0).all()


def test_default_follows_the_first_largest_face_not_the_largest():
    n = 12
    small, big = (100, 100, 60, 80), (400, 100, 90, 120)
    script = {i: [face(*small), face(*big)] for i in range(n)}
    for i in range(6, n):  # the small face grows bigger than the followed one: published code would switch
        script[i] = [face(100, 100, 60 + 10 * (i - 5), 80 + 10 * (i - 5)), face(*big)]
    script[3] = [face(*small)]  # ours missing once: bridged, not swapped for the other face
    track = run(script, n)
    assert track.counts == {"found": 11, "interpolated": 1, "absent": 0}
    assert np.all(track.boxes[:, 0] > 390)


def test_selection_by_index_point_and_box():
    left, middle, right = face(100, 100), face(300, 100, 90, 110), face(600, 100)
    script = {i: [right, left, middle] for i in range(2, 5)}  # no face on frames 0-1
    cases = [(FaceSelection(), 300), (FaceSelection(index=0), 100), (FaceSelection(index=2), 600),
             (FaceSelection(point=(620, 150)), 600), (FaceSelection(box=(90, 90, 170, 190)), 100)]
    for selection, x1 in cases:
        track = run(script, 5, selection)
        assert track.present.tolist() == [False, False, True, True, True]
        assert np.all(track.boxes[2:, 0] == x1), selection
    with pytest.raises(InputError, match="face index 3 .* frame 2"):
        run(script, 5, FaceSelection(index=3))
    with pytest.raises(InputError, match="no face contains the point"):
        run(script, 5, FaceSelection(point=(5, 5)))
    with pytest.raises(InputError, match="no face overlaps"):
        run(script, 5, FaceSelection(box=(0, 0, 10, 10)))


def test_after_a_long_absence_the_face_is_found_again():
    script = {i: [face(100, 100), face(500, 100, 80, 100)] for i in range(3)}
    script.update({i: [face(130, 100), face(520, 100, 80, 100)] for i in range(10, 12)})  # moved meanwhile
    by_index = run(script, 12, FaceSelection(index=0, max_gap=3))
    assert by_index.present.tolist() == [True] * 3 + [False] * 7 + [True] * 2
    assert by_index.boxes[10, 0] == 130  # nearest to where it was
    assert run(script, 12, FaceSelection(max_gap=3)).boxes[10, 0] == 520  # default: the largest again


def test_filters_scale_for_small_frames():
    script = {0: [face(10, 10, 30, 45), face(100, 10, 200, 60, score=0.99), face(300, 10, 60, 80, score=0.4)]}
    small = run(script, 1, size={"width": 360, "height": 640})  # min size 16.7 x 26.7: the 30 x 45 face counts
    assert small.present.all() and small.boxes[0, 0] == 10  # too wide (w/h > 1.5) and low score dropped
    assert not run(script, 1, size={"width": 1920, "height": 1080}).present.any()  # the published 50 x 80
    assert run(script, 1, FaceSelection(min_size=(20, 20))).present.all()
    assert FaceSelection().size_limits(1080, 1920) == (50, 80)
    np.testing.assert_allclose(FaceSelection().size_limits(1280, 720), (50 * 2 / 3, 80 * 2 / 3))


def test_detection_stride_detects_every_kth_and_the_last_frame():
    script = {i: [face(100 + i, 100)] for i in range(11)}
    detector = Scripted(script)
    track = track_faces(blank_frames(11), detector, FaceSelection(stride=3), progress=True)
    assert detector.calls == [0, 3, 6, 9, 10]
    assert track.counts == {"found": 5, "interpolated": 6, "absent": 0}
    np.testing.assert_allclose(track.boxes[:, 0], 100 + np.arange(11), atol=1e-4)
    with pytest.raises(InputError, match="stride"):
        FaceSelection(stride=5, max_gap=2)


def test_bad_streams():
    with pytest.raises(InputError, match="no frames"):
        track_faces(iter([]), Scripted({}))
    frames = [np.zeros((64, 64, 3), np.uint8), np.zeros((64, 80, 3), np.uint8)]
    with pytest.raises(InputError, match="frame 1 is 80x64"):
        track_faces(frames, Scripted({}))
    with pytest.raises(InputError, match="uint8"):
        track_faces([np.zeros((64, 64, 3), np.float32)], Scripted({}))
    with pytest.raises(InputError, match="not several"):
        FaceSelection(index=0, point=(1, 2))


# ------------------------------------------------------------------------------------------ saving tracks


def test_save_load_round_trip_and_check(tmp_path):
    script = {i: [face(100.25 + i, 50.5)] for i in range(8) if i not in (3, 6, 7)}
    track = run(script, 8, FaceSelection(max_gap=1), fps=25.0)
    for name in ("track.npz", "track.json"):
        track.save(tmp_path / name)
        back = FaceTrack.load(tmp_path / name)
        assert back.num_frames == len(back) == 8 and back.meta["selection"]["max_gap"] == 1
        assert (back.present == track.present).all() and (back.interpolated == track.interpolated).all()
        assert (back.points == track.points).all() and back.points.dtype == np.int32
        np.testing.assert_allclose(back.boxes, track.boxes, atol=0.005)
        assert (back.width, back.height, back.fps, back.backend) == (1280, 720, 25.0, "scripted")
        assert back.counts == track.counts == {"found": 5, "interpolated": 1, "absent": 2}
    doc = json.loads((tmp_path / "track.json").read_text())
    assert doc["frames"][6] == {"present": False} and doc["frames"][3]["interpolated"] is True

    # A hand-edited JSON track is read back; broken ones are rejected clearly.
    doc["frames"][6] = {"present": True, "points": [[1, 2], [3, 4], [5, 6]], "box": [0, 0, 10, 10]}
    (tmp_path / "edited.json").write_text(json.dumps(doc))
    assert FaceTrack.load(tmp_path / "edited.json").points[6].tolist() == [[1, 2], [3, 4], [5, 6]]
    doc["frames"][6]["points"] = [[1, 2]]
    (tmp_path / "broken.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="frame 6"):
        FaceTrack.load(tmp_path / "broken.json")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read"):
        FaceTrack.load(tmp_path / "junk.npz")
    with pytest.raises(InputError, match="not found"):
        FaceTrack.load(tmp_path / "missing.json")
    with pytest.raises(InputError, match=".npz or .json"):
        track.save(tmp_path / "track.txt")

    track.check(1280, 720, 8)
    track.check(1280, 720)
    with pytest.raises(InputError, match="1280x720 frames, the video is 720x1280"):
        track.check(720, 1280, 8)
    with pytest.raises(InputError, match="8 frames, the video has 9"):
        track.check(1280, 720, 9)


# ----------------------------------------------------------------------------------------------- real video


@pytest.fixture(scope="module")
def detector():
    det = create_detector("mediapipe")
    yield det
    det.close()


def test_blanked_frames_keep_the_frame_count(detector):
    frames = fixture_frames("demo1_360p.mp4")
    no_face = cv2.resize(frames[0][:150], (frames[0].shape[1], frames[0].shape[0]))  # background above the head
    for i in (8, 9, 10):
        frames[i] = np.zeros_like(frames[i])
    for i in range(25, 41):
        frames[i] = no_face
    track = track_faces(iter(frames), detector, FaceSelection(max_gap=12))
    assert len(track) == len(frames) == 50
    assert np.flatnonzero(track.interpolated).tolist() == [8, 9, 10]
    assert np.flatnonzero(~track.present).tolist() == list(range(25, 41))
    assert track.counts == {"found": 31, "interpolated": 3, "absent": 16}


def _two_faces(n: int, zoom_left_from: int | None = None) -> list[np.ndarray]:
    """demo1 (left, smaller face) and demo2 (right) side by side; optionally the left one zooms in
    gradually (about its face) until it is the larger face."""
    left, right = fixture_frames("demo1_360p.mp4", n), fixture_frames("demo2_360p.mp4", n)
    frames = []
    for i, (a, b) in enumerate(zip(left, right)):
        if zoom_left_from is not None and i >= zoom_left_from:
            s = 1 + 0.1 * (i - zoom_left_from + 1)
            m = np.array([[s, 0, 194 * (1 - s)], [0, s, 240 * (1 - s)]])
            a = cv2.warpAffine(a, m, (a.shape[1], a.shape[0]))
        frames.append(np.concatenate([a, b], axis=1))
    return frames


def test_two_faces_choice_and_following(detector):
    frames = _two_faces(4)
    width = frames[0].shape[1] // 2
    right_face = track_faces(frames, detector)  # default: the largest (demo2's)
    assert right_face.present.all() and np.all(right_face.boxes[:, 0] > width)
    choices = [(FaceSelection(index=0), False), (FaceSelection(index=1), True),
               (FaceSelection(point=(194, 240)), False), (FaceSelection(point=(width + 183, 160)), True)]
    for selection, on_right in choices:
        track = track_faces(frames, detector, selection)
        assert track.present.all() and np.all((track.boxes[:, 0] > width) == on_right), selection

    frames = _two_faces(12, zoom_left_from=3)  # the left face grows past the right one
    default = track_faces(frames, detector)
    assert default.present.all() and np.all(default.boxes[:, 0] > width)
    left = track_faces(frames, detector, FaceSelection(index=0))
    assert left.present.all() and np.all(left.boxes[:, 2] < width + 10)
    left_w, right_w = left.boxes[:, 2] - left.boxes[:, 0], default.boxes[:, 2] - default.boxes[:, 0]
    assert left_w[-1] > 1.4 * left_w[0] and left_w[-1] > right_w[-1]


def test_grayscale_and_tiny_videos(detector):
    frames = fixture_frames("demo3_360p.mp4", 5)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    assert track_faces(gray, detector).counts["found"] == 5
    tiny = [cv2.resize(f, (36, 64), interpolation=cv2.INTER_AREA) for f in frames]
    track = track_faces(tiny, detector)
    assert (track.width, track.height) == (36, 64) and sum(track.counts.values()) == 5


def _align_paste_round_trip(detector, name: str, min_psnr: float = 35.0) -> None:
    frames = fixture_frames(name)
    track = track_faces(frames, detector)
    assert track.present.all()
    aligner = FaceAligner(256)
    mats = aligner.matrices(track.points)
    stack = np.stack(frames)
    faces = aligner.warp(stack, mats)
    restored = aligner.paste(stack, faces, mats)
    height, width = stack.shape[1:3]
    for i, box in enumerate(track.boxes):
        x1, y1 = max(int(box[0]), 0), max(int(box[1]), 0)
        x2, y2 = min(int(box[2]), width), min(int(box[3]), height)
        value = psnr(restored[i, y1:y2, x1:x2], stack[i, y1:y2, x1:x2])
        assert value >= min_psnr, f"{name} frame {i}: {value:.1f} dB"


@pytest.mark.parametrize("name", ["demo1_360p.mp4", "demo2_360p.mp4", "demo3_360p.mp4"])
def test_align_paste_round_trip_360p(detector, name):
    _align_paste_round_trip(detector, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["demo1_1080p.mp4", "demo2_1080p.mp4", "demo3_1080p.mp4"])
def test_align_paste_round_trip_1080p(detector, name):
    _align_paste_round_trip(detector, name)


def test_face_cut_by_the_frame_top_aligns_and_pastes(detector):
    frames = [np.ascontiguousarray(f[220:]) for f in fixture_frames("demo1_360p.mp4", 6)]  # cut just below the brows
    track = track_faces(frames, detector)
    assert sum(track.counts.values()) == 6
    if track.present.any():
        aligner = FaceAligner(256)
        stack = np.stack(frames)[track.present]
        mats = aligner.matrices(track.points[track.present])
        out = aligner.paste(stack, aligner.warp(stack, mats), mats)
        assert out.shape == stack.shape
