"""Training datasets: item layout, which windows positives / negatives / references come from, skipping
unusable clips, and the content-keyed audio caches."""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest
import torch

from conftest import GOLDEN
from latentsync.audio import WhisperFeatures, load_audio, mel_window, syncnet_mel
from latentsync.audio.whisper import audio_windows
from latentsync.data.cache import FeatureCache, cache_key
from latentsync.data.datasets import SyncNetDataset, UNetDataset, read_fileslist
from latentsync.errors import InputError
from latentsync.media import VideoWriter

torch.set_num_threads(1)
R = 32


def frame_value(index: int) -> int:
    """Grey level of synthetic frame `index`: each frame says which one it is."""
    return 10 + 4 * index


def write_clip(path, num_frames: int, seed: int = 0):
    """An R x R clip whose frame i is flat grey frame_value(i), with noise-burst 'speech'."""
    frames = np.stack([np.full((R, R, 3), frame_value(i), np.uint8) for i in range(num_frames)])
    rng = np.random.default_rng(seed)
    envelope = np.repeat(rng.random(num_frames) > 0.5, 640).astype(np.float32)
    audio = (0.3 * rng.standard_normal(num_frames * 640) * envelope).astype(np.float32)
    with VideoWriter(path, R, R, fps=25, audio=audio) as writer:
        writer.write(frames)
    return path


def remux(video_source, audio_source, path):
    """A clip with the video stream of one file and the audio stream of another (no re-encoding)."""
    with av.open(str(video_source)) as video, av.open(str(audio_source)) as audio, av.open(str(path), "w") as out:
        streams = {video.streams.video[0]: out.add_stream_from_template(video.streams.video[0]),
                   audio.streams.audio[0]: out.add_stream_from_template(audio.streams.audio[0])}  # fmt: skip
        for source, target in streams.items():
            for packet in source.container.demux(source):
                if packet.dts is not None:  # the flush packet
                    packet.stream = target
                    out.mux(packet)
    return path


def frame_indices(frames: torch.Tensor) -> np.ndarray:
    """Recover the frame numbers of (F, 3, H, W) model-range frames of synthetic clips."""
    grey = ((frames.float().mean(dim=(1, 2, 3)) + 1) * 127.5).numpy()
    return np.round((grey - 10) / 4).astype(int)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {
        "long": write_clip(root / "long.mp4", 56, seed=1),
        "medium": write_clip(root / "medium.mp4", 40, seed=2),  # fine for SyncNet, too short for the U-Net
        "short": write_clip(root / "short.mp4", 20, seed=3),  # too short for both
    }


@pytest.fixture(scope="module")
def whisper():
    return WhisperFeatures(GOLDEN / "whisper_random.pt")  # random weights, tiny layout with width 64


def test_syncnet_items_pair_frames_and_mel_windows(clips, tmp_path):
    dataset = SyncNetDataset([clips["long"]], resolution=R, cache_dir=tmp_path)
    mel = syncnet_mel(load_audio(clips["long"]))
    labels = []
    for sample_id in range(40):
        item = dataset[sample_id]
        assert item["frames"].shape == (48, R // 2, R) and item["frames"].dtype == torch.float32
        assert item["frames"].min() >= -1 and item["frames"].max() <= 1
        assert item["mel"].shape == (1, 80, 52) and item["label"].shape == ()
        start, frames_start = item["start"], item["frames_start"]
        np.testing.assert_array_equal(item["mel"][0].numpy(), mel_window(mel, start))
        frames = item["frames"].reshape(16, 3, R // 2, R)
        np.testing.assert_array_equal(frame_indices(frames), np.arange(frames_start, frames_start + 16))
        if item["label"] == 1:
            assert frames_start == start  # in sync: the mel window of these very frames
        else:
            assert item["label"] == 0 and frames_start != start  # off sync: another window of the clip
        labels.append(float(item["label"]))
    assert 0.25 < np.mean(labels) < 0.75


def test_syncnet_other_mel_is_another_window_of_the_same_clip(clips, tmp_path):
    plain = SyncNetDataset([clips["long"]], resolution=R, cache_dir=tmp_path, seed=3)
    extra = SyncNetDataset([clips["long"]], resolution=R, cache_dir=tmp_path, seed=3, other_mel=True)
    mel = syncnet_mel(load_audio(clips["long"]))
    for sample_id in range(20):
        item, published = extra[sample_id], plain[sample_id]
        # The published item is unchanged; the extra window is off sync for the frames, and its mel is that window's.
        assert (item["start"], item["frames_start"]) == (published["start"], published["frames_start"])
        assert torch.equal(item["frames"], published["frames"]) and torch.equal(item["mel"], published["mel"])
        assert item["other_start"] != item["frames_start"]
        np.testing.assert_array_equal(item["other_mel"][0].numpy(), mel_window(mel, item["other_start"]))
    assert "other_mel" not in plain[0]


def test_items_depend_only_on_the_sample_id(clips):
    a = SyncNetDataset([clips["long"], clips["medium"]], resolution=R, seed=5)
    b = SyncNetDataset([clips["long"], clips["medium"]], resolution=R, seed=5)
    for sample_id in (7, 3, 12):
        x, y = a[sample_id], b[sample_id]
        assert (x["start"], x["frames_start"], x["clip"]) == (y["start"], y["frames_start"], y["clip"])
    # Ids beyond the clip count cycle through the clips with new windows.
    assert a[2]["clip"] == a[0]["clip"] == str(clips["long"])


def test_samples_per_clip_repeats_a_fixed_set(clips):
    dataset = SyncNetDataset([clips["long"], clips["medium"]], resolution=R, samples_per_clip=2)
    keys = [(item["clip"], item["start"], item["frames_start"]) for item in map(dataset.__getitem__, range(8))]
    assert keys[:4] == keys[4:] and len(set(keys[:4])) == 4


def test_frames_in_memory_give_the_same_items(clips, whisper):
    kept = SyncNetDataset([clips["long"], clips["medium"]], resolution=R, seed=5, frames_in_memory=True)
    read = SyncNetDataset([clips["long"], clips["medium"]], resolution=R, seed=5)
    for sample_id in (7, 3, 12, 0):
        assert torch.equal(kept[sample_id]["frames"], read[sample_id]["frames"])
    assert len(kept._decoded) == 2  # each clip decoded once
    unet_kept = UNetDataset([clips["long"]], whisper, resolution=R, frames_in_memory=True)
    unet_read = UNetDataset([clips["long"]], whisper, resolution=R)
    x, y = unet_kept[1], unet_read[1]
    assert torch.equal(x["frames"], y["frames"]) and torch.equal(x["ref_frames"], y["ref_frames"])


def test_full_frames_without_lower_half(clips):
    item = SyncNetDataset([clips["long"]], resolution=R, lower_half=False)[0]
    assert item["frames"].shape == (48, R, R)


def test_unet_items(clips, whisper, tmp_path):
    mask = np.ones((R, R), np.float32)
    mask[R // 2 :] = 0
    dataset = UNetDataset([clips["long"]], whisper, resolution=R, mask=mask, cache_dir=tmp_path)
    features = whisper.features(load_audio(clips["long"]))
    mel = syncnet_mel(load_audio(clips["long"]))
    for sample_id in range(6):
        item = dataset[sample_id]
        start, ref_start = item["start"], item["ref_start"]
        assert item["frames"].shape == item["ref_frames"].shape == (16, 3, R, R)
        assert item["audio_windows"].shape == (16, 50, 64) and item["mel"].shape == (1, 80, 52)
        assert abs(ref_start - start) >= 16  # no overlap with the ground truth
        np.testing.assert_array_equal(frame_indices(item["frames"]), np.arange(start, start + 16))
        np.testing.assert_array_equal(frame_indices(item["ref_frames"]), np.arange(ref_start, ref_start + 16))
        torch.testing.assert_close(item["audio_windows"], audio_windows(features, 16, start))
        np.testing.assert_array_equal(item["mel"][0].numpy(), mel_window(mel, start))
        assert torch.equal(item["masked_frames"][:, :, R // 2 :], torch.zeros(16, 3, R // 2, R))
        assert torch.equal(item["masked_frames"][:, :, : R // 2], item["frames"][:, :, : R // 2])


def test_too_short_clips_are_skipped_with_a_reason(clips, whisper, caplog):
    with caplog.at_level(logging.WARNING):
        unet = UNetDataset([clips["medium"], clips["long"], clips["short"]], whisper, resolution=R)
        assert all(unet[i]["clip"] == str(clips["long"]) for i in range(3))
        syncnet = SyncNetDataset([clips["short"], clips["medium"]], resolution=R)
        assert syncnet[0]["clip"] == str(clips["medium"])
    assert "only 40 frames, at least 48" in unet.skipped[str(clips["medium"])]
    assert "only 20 frames, at least 32" in syncnet.skipped[str(clips["short"])]
    assert "skipping clip" in caplog.text and "short.mp4" in caplog.text


def test_windows_stay_within_a_shorter_audio_track(tmp_path):
    """56 video frames with 36 frames of speech: samples come from the first 36 frames, none fails the clip."""
    speech = write_clip(tmp_path / "speech.mp4", 36, seed=4)
    clip = remux(write_clip(tmp_path / "video.mp4", 56), speech, tmp_path / "clip.mp4")
    dataset = SyncNetDataset([clip], resolution=R)
    items = [dataset[i] for i in range(24)]
    assert not dataset.skipped
    assert max(max(item["start"], item["frames_start"]) for item in items) <= 36 - 16


def test_no_usable_clip_is_a_clear_error(clips):
    with pytest.raises(InputError, match="no usable clip"):
        SyncNetDataset([clips["short"]], resolution=R)[0]


def test_caches_hit_on_second_use_and_follow_the_audio(clips, whisper, tmp_path):
    first = UNetDataset([clips["long"]], whisper, resolution=R, cache_dir=tmp_path)
    item = first[0]
    assert (first.cache.hits, first.cache.misses) == (0, 2)  # mel + whisper computed and stored
    second = UNetDataset([clips["long"]], whisper, resolution=R, cache_dir=tmp_path)
    again = second[0]
    assert (second.cache.hits, second.cache.misses) == (2, 0)
    torch.testing.assert_close(again["audio_windows"], item["audio_windows"], rtol=0, atol=0)

    # The same path rewritten with other speech: new keys, never the stale entries (also in a live dataset).
    path = write_clip(tmp_path / "clip.mp4", 56, seed=1)
    live = SyncNetDataset([path], resolution=R, cache_dir=tmp_path)
    live[0]
    write_clip(path, 56, seed=9)
    fresh = live[1]
    assert (live.cache.hits, live.cache.misses) == (1, 1)  # same speech as long.mp4 first, then new speech
    np.testing.assert_array_equal(fresh["mel"][0].numpy(), mel_window(syncnet_mel(load_audio(path)), fresh["start"]))
    assert len(list(tmp_path.glob("mel/*/*.npy"))) == 2


def test_cache_recovers_from_a_damaged_entry(tmp_path):
    cache = FeatureCache(tmp_path)
    key = cache_key(kind="test", value=1)
    cache.get_or_compute("x", key, lambda: np.arange(3))
    cache.path("x", key).write_bytes(b"garbage")
    np.testing.assert_array_equal(cache.get_or_compute("x", key, lambda: np.arange(3)), np.arange(3))
    assert cache.misses == 2


def test_read_fileslist(clips, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# clips\n{clips['long']}\n\nmissing.mp4\n")
    assert read_fileslist(listing) == [clips["long"]]
    relative = clips["long"].parent / "rel.txt"
    relative.write_text("long.mp4\nmedium.mp4\n")
    assert read_fileslist(relative) == [clips["long"], clips["medium"]]
    assert read_fileslist(data_dir=clips["long"].parent) == sorted(clips.values())
    with pytest.raises(InputError, match="--fileslist / --data-dir"):
        read_fileslist()
    with pytest.raises(InputError, match="--val-fileslist / --val-data-dir"):
        read_fileslist(tmp_path / "nope.txt", purpose="validation")
