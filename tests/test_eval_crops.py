"""Face tracks and crops of the evaluation (golden/eval/crop_io) and `score_video` end to end on a real clip."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from safetensors.torch import load_file

from conftest import DATA, MEDIA
from latentsync.errors import InputError
from latentsync.evaluation import load_s3fd, load_syncnet_v2, score_video, sync_confidence
from latentsync.evaluation.crops import (
    SceneCuts, audio_int16, crop_face, crop_rects, smooth_boxes, track_crops, track_faces, tracks_in_scenes,
)
from latentsync.evaluation.sync import combine_tracks
from latentsync.media import VideoWriter, read_frames

# On this shared CI-sized machine, one thread per test process is faster than contending for two.
pytestmark = pytest.mark.usefixtures("one_thread")

EVAL = DATA / "golden" / "eval"
SOURCE = MEDIA / "demo1_360p.mp4"


def test_crops_match_published(tmp_path):
    ref = load_file(str(EVAL / "crop_io.safetensors"))
    meta = json.loads((EVAL / "crop_io.json").read_text())
    boxes = ref["bbox"].numpy()
    s, x, y = smooth_boxes(boxes)
    assert np.array_equal(s, ref["smoothed_s"].numpy())
    assert np.array_equal(x, ref["smoothed_x"].numpy()) and np.array_equal(y, ref["smoothed_y"].numpy())
    rects = crop_rects(s, x, y, meta["crop_scale"])
    assert np.array_equal(rects, ref["pad_and_rect"].numpy())
    for frame, crop, k in zip(ref["frames_bgr_uint8"].numpy(), ref["crops_bgr_uint8"].numpy(), ref["keep_index"].tolist()):
        assert np.array_equal(crop_face(frame, rects[k]), crop)


def test_crop_equals_padding_the_frame():
    """A crop running past the padded frame's bottom-right edge: the same as padding and slicing."""
    frame = np.random.default_rng(1).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    # S3FD boxes are not clipped: a centre below and right of the frame makes the slice stop at the padded edge
    rect = crop_rects(np.array([40.0]), np.array([110.0]), np.array([130.0]))[0]
    pad, r0, r1, c0, c1 = rect
    assert r1 > 120 + 2 * pad and c1 > 90 + 2 * pad
    padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=110)
    assert np.array_equal(crop_face(frame, rect), cv2.resize(padded[r0:r1, c0:c1], (224, 224)))


def moving_face(frames: int, start: float = 100.0, size: float = 120.0) -> list[np.ndarray]:
    return [np.array([[start + i, 50.0, start + i + size, 50.0 + size, 0.99]]) for i in range(frames)]


def test_tracking_rules():
    dets = moving_face(60)
    dets[20] = dets[21] = np.zeros((0, 5))  # a short miss is interpolated
    tracks = track_faces(dets, 100, min_track=50)
    assert len(tracks) == 1
    track = tracks[0]
    assert track.first_frame == 100 and track.last_frame == 159 and len(track.boxes) == 60
    np.testing.assert_allclose(track.boxes[20], [120.0, 50.0, 240.0, 170.0])
    assert track_faces(moving_face(50), min_track=50) == []  # needs more than min_track detections
    assert track_faces(moving_face(60, size=90.0), min_track=50) == []  # mean size must exceed 100 px
    gap = moving_face(40) + [np.zeros((0, 5))] * 26 + moving_face(40)
    assert len(track_faces(gap, min_track=30)) == 2  # a gap of 26 frames ends the track
    two = [np.concatenate([a, b]) for a, b in zip(moving_face(60), moving_face(60, start=400.0))]
    assert sorted(t.boxes[0, 0] for t in track_faces(two, min_track=50)) == [100.0, 400.0]
    scenes = [(0, 30), (30, 90)]
    assert tracks_in_scenes(moving_face(90), scenes, min_track=50)[0].first_frame == 30  # the 30-frame scene is skipped


def test_face_listed_after_a_joining_face_waits_for_the_next_track():
    """Two heavily overlapping faces per frame: as in the published loop, the second one listed never joins the
    track its neighbour just joined (no two boxes of one frame in a track); it forms the next track."""
    first = moving_face(60)
    second = moving_face(60, start=105.0)
    tracks = track_faces([np.concatenate([a, b]) for a, b in zip(first, second)], min_track=50)
    assert len(tracks) == 2
    assert [len(t.frames) for t in tracks] == [60, 60]
    assert tracks[0].boxes[0, 0] == 100.0 and tracks[1].boxes[0, 0] == 105.0


def test_scene_cuts():
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (90, 160, 3), dtype=np.uint8) for _ in range(2))
    cuts = SceneCuts()
    for i in range(60):
        cuts.feed(a if i < 30 else b // 3)
    assert cuts.scenes() == [(0, 30), (30, 60)]
    whole = SceneCuts()
    for _ in range(20):
        whole.feed(a)
    assert whole.scenes() == [(0, 20)]


@pytest.fixture(scope="module")
def models():
    return load_syncnet_v2(EVAL / "syncnet_v2_random.model"), load_s3fd(EVAL / "sfd_face_random.pth")


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    """The first 16 frames of demo1 at 144 x 256 with its speech (0.64 s): cheap enough for S3FD on a CPU."""
    path = tmp_path_factory.mktemp("clip") / "demo1_small.mp4"
    audio = audio_int16(SOURCE).astype(np.float32) / 32768
    with VideoWriter(path, 144, 256, audio=audio[: 16 * 640]) as writer:
        for _, frame in read_frames(SOURCE, 25, range(16)):
            writer.write(cv2.resize(frame, (144, 256), interpolation=cv2.INTER_AREA))
    return path


def test_score_video_end_to_end(models, small_clip):
    syncnet, detector = models
    seen = []
    # random weights "detect" several boxes per frame; 120 px keeps the (two) largest tracks
    result = score_video(small_clip, syncnet, detector, min_track=10, min_face_size=120, progress=seen.append)
    assert sum(seen) == result.num_frames == 16
    assert result.found_face and result.reason == "" and len(result.tracks) >= 1
    track = result.tracks[0]
    assert 0 <= track.first_frame < track.last_frame < 16 and track.last_frame - track.first_frame >= 10
    crops = track_crops(small_clip, track.track)
    assert crops.shape == (track.last_frame - track.first_frame + 1, 224, 224, 3)
    audio = audio_int16(small_clip)[track.first_frame * 640 : (track.last_frame + 1) * 640]
    direct = sync_confidence(syncnet, crops, audio)
    assert track.result.offset == direct.offset and track.result.sync_c == pytest.approx(direct.sync_c, abs=1e-5)
    assert np.allclose(track.result.mean_dists, direct.mean_dists, atol=1e-5)
    assert len(track.window_times) == direct.num_windows and track.window_times[0] == track.first_frame / 25
    assert result.combined == combine_tracks([t.result for t in result.tracks])
    assert np.isfinite(result.combined.sync_d) and result.combined.sync_c >= 0
    report = json.loads(json.dumps(result.as_dict()))
    assert report["offset"] == result.combined.offset and len(report["tracks"]) == len(result.tracks)
    assert report["tracks"][0]["window_times"] == pytest.approx(track.window_times.tolist())


class NoFaces:
    """A stand-in detector for a video without faces (random S3FD weights "find" faces everywhere)."""

    def detect_batch(self, frames, threshold=0.9, scale=0.25):
        return [np.zeros((0, 5)) for _ in frames]


def test_no_face_track_is_reported(models, tmp_path):
    syncnet, _ = models
    gray = tmp_path / "gray.mp4"
    with VideoWriter(gray, 64, 64, audio=SOURCE) as writer:
        writer.write(np.full((30, 64, 64, 3), 128, np.uint8))
    result = score_video(gray, syncnet, NoFaces())
    assert not result.found_face and result.tracks == [] and result.combined is None
    assert result.num_frames == 30 and result.reason.startswith("no face track")
    assert result.as_dict()["sync_c"] is None and result.as_dict()["found_face"] is False


def test_missing_file_is_rejected(models, tmp_path):
    with pytest.raises(InputError):
        score_video(tmp_path / "missing.mp4", *models)


def test_video_without_audio_is_rejected(models, tmp_path):
    silent = tmp_path / "silent.mp4"
    with VideoWriter(silent, 64, 64) as writer:
        writer.write(np.full((10, 64, 64, 3), 128, np.uint8))
    with pytest.raises(InputError, match="no audio"):
        score_video(silent, *models)
