"""Odd and broken inputs to `latentsync infer`, made here: every mistake is one line plus a hint, before any model
loads and within a second; inputs stay byte-identical and nothing is left behind; what is accepted is said in the
summary (cut-off videos with --allow-truncated, odd frame sizes)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import AUDIO, MEDIA, fixture_frames, unwritable_folder
from latentsync.audio import SAMPLE_RATE, load_audio, save_wav
from latentsync.cli import main
from latentsync.errors import InputError
from latentsync.face import FaceSelection, FaceTrack
from latentsync.media import frame_schedule, probe_video, read_frames
from latentsync.pipeline import LipSyncPipeline, RunOptions
from latentsync.testing import write_random_models

VIDEO = MEDIA / "demo1_360p.mp4"  # 360x640, 50 frames at 25 fps
HEAVY = ("torch", "diffusers", "mediapipe", "cv2", "insightface", "onnxruntime")
# What the tiny-model runs use: one denoising step without guidance keeps them short.
FAST = ["--steps", "1", "--guidance", "1.0", "--seed", "0", "--face-backend", "mediapipe", "--offline"]


def write_speech(path: Path, seconds: float) -> Path:
    """The first `seconds` of a real speech track, as a 16 kHz wav."""
    return save_wav(path, load_audio(AUDIO / "demo1_speech.flac")[: int(seconds * SAMPLE_RATE)])


def write_video(path: Path, frames: list[np.ndarray], codec: str = "libx264", pix_fmt: str = "yuv420p") -> Path:
    """Encode RGB frames at 25 fps with the index at the front of the file (as streaming mp4s are made)."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream(codec, rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        for image in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    return path


def cut_off(source: Path, target: Path, packets: int) -> Path:
    """A copy of `source` that ends half way into its video packet number `packets` (in file order): a copy
    interrupted part way, whose index still lists every frame."""
    with av.open(str(source)) as container:
        positions = sorted(p.pos for p in container.demux(video=0) if p.size)
    data = source.read_bytes()
    end = (positions[packets] + positions[packets + 1]) // 2
    target.write_bytes(data[:end])
    return target


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones too) with a digest of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Good and broken inputs, all made from the test fixtures."""
    d = tmp_path_factory.mktemp("inputs")
    frames = fixture_frames(VIDEO.name, limit=20)
    speech = write_speech(d / "speech.wav", 0.32)
    blip = d / "blip.wav"  # 20 ms: shorter than one video frame
    save_wav(blip, load_audio(speech)[: SAMPLE_RATE // 50])
    notes = d / "notes.mp4"
    notes.write_text("this is not a video\n")
    silent = write_video(d / "silent.mp4", frames[:5])
    whole = write_video(d / "whole.mp4", frames)
    odd = write_video(d / "odd.mp4", [f[:541, :301] for f in frames], pix_fmt="yuv444p")  # 4:4:4 allows odd sizes
    other_size = write_video(d / "other size.mp4", [f[:320, :240] for f in frames])
    track = d / "track.json"
    FaceTrack(np.ones(20, bool), np.zeros(20, bool), np.full((20, 3, 2), 100), np.tile([[80, 60, 280, 300]], (20, 1)),
              width=360, height=640, backend="mediapipe", fps=25.0).save(track)
    header = json.loads(track.read_text())
    no_width = d / "no width.json"
    no_width.write_text(json.dumps({k: v for k, v in header.items() if k != "width"}))
    broken_json = d / "broken.json"
    broken_json.write_text(track.read_text()[:200])
    (d / "folder").mkdir()
    (d / "taken.mp4").mkdir()
    return {
        "video": VIDEO, "speech": speech, "blip": blip, "notes": notes, "silent": silent, "whole": whole,
        "cut": cut_off(whole, d / "cut.mp4", 12), "cut odd": cut_off(odd, d / "cut odd.mp4", 12),
        "odd": odd, "other size": other_size, "track": track, "no width": no_width, "broken json": broken_json,
        "folder": d / "folder", "taken": d / "taken.mp4", "photo": _photo(d, frames[0]), "root": d,
        "locked": unwritable_folder(d),
    }


def _photo(folder: Path, frame: np.ndarray) -> Path:
    from PIL import Image

    path = folder / "photo.png"
    Image.fromarray(frame[40:580, 20:340]).save(path)
    return path


def error_cases(i: dict[str, Path], out: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (command line after `infer`, a word the error line must hold)."""
    v, a, o = str(i["video"]), str(i["speech"]), str(out)
    base = ["--video", v, "--audio", a, "--output", o]
    return {
        # sampling and model options
        "zero steps": ([*base, "--steps", "0"], "--steps"),
        "negative steps": ([*base, "--steps", "-5"], "--steps"),
        "steps not a number": ([*base, "--steps", "many"], "--steps"),
        "NaN guidance": ([*base, "--guidance", "nan"], "--guidance"),
        "guidance below 1": ([*base, "--guidance", "0.5"], "--guidance"),
        "resolution not a multiple of 64": ([*base, "--resolution", "200"], "--resolution"),
        "zero resolution": ([*base, "--resolution", "0"], "--resolution"),
        "negative seed": ([*base, "--seed", "-1"], "--seed"),
        "crf out of range": ([*base, "--crf", "60"], "--crf"),
        "unknown device": ([*base, "--device", "gpu"], "device"),
        "negative max gap": ([*base, "--max-gap", "-1"], "--max-gap"),
        "negative face index": ([*base, "--face-index", "-1"], "face index"),
        "empty face box": ([*base, "--face-box", "100,100,100,100"], "face box"),
        "face point of three numbers": ([*base, "--face-point", "1,2,3"], "--face-point"),
        "two face choices": ([*base, "--face-index", "0", "--face-point", "5,5"], "only one"),
        "save-track as txt": ([*base, "--save-track", str(i["root"] / "t.txt")], ".json"),
        # the command line itself
        "no audio given": (["--video", v, "--output", o], "--audio"),
        "video and image": ([*base, "--image", str(i["photo"])], "--image"),
        # the video
        "missing video": (["--video", str(i["root"] / "nope.mp4"), "--audio", a, "--output", o], "not found"),
        "video is a folder": (["--video", str(i["folder"]), "--audio", a, "--output", o], "directory"),
        "text as video": (["--video", str(i["notes"]), "--audio", a, "--output", o], "cannot read"),
        "speech as video": (["--video", a, "--audio", a, "--output", o], "no video stream"),
        "cut-off video": (["--video", str(i["cut"]), "--audio", a, "--output", o], "cut off"),
        "video as --image": (["--image", v, "--audio", a, "--output", o], "--image"),
        # the speech
        "missing audio": (["--video", v, "--audio", str(i["root"] / "nope.wav"), "--output", o], "not found"),
        "text as audio": (["--video", v, "--audio", str(i["notes"]), "--output", o], "cannot read"),
        "video without sound": (["--video", v, "--audio", str(i["silent"]), "--output", o], "no audio track"),
        "speech under one frame": (["--video", v, "--audio", str(i["blip"]), "--output", o], "40 ms"),
        # the output
        "output is a folder": (["--video", v, "--audio", a, "--output", str(i["folder"])], "directory"),
        "output is a folder named .mp4": (["--video", v, "--audio", a, "--output", str(i["taken"])], "directory"),
        "output as gif": (["--video", v, "--audio", a, "--output", str(out.with_suffix(".gif"))], "video file"),
        "output is the input": (["--video", v, "--audio", a, "--output", v], "same file"),
        "unwritable folder": (["--video", v, "--audio", a, "--output", str(i["locked"] / "o.mp4")], "writ"),
        # a saved face track
        "missing track": ([*base, "--track", str(i["root"] / "nope.json")], "not found"),
        "track without width": ([*base, "--track", str(i["no width"])], "width"),
        "track cut short": ([*base, "--track", str(i["broken json"])], "JSON"),
        "track of another video": (["--video", str(i["other size"]), "--audio", a, "--output", o,
                                    "--track", str(i["track"])], "240x320"),
        "track as txt": ([*base, "--track", str(i["notes"])], ".json"),
    }


def check_error(err: str, needle: str, name: str) -> str:
    """The error is one line and a hint, in the user's words: returns the error line."""
    lines = err.splitlines()
    assert len(lines) == 2, (name, err)
    message, hint = lines
    assert message.startswith("latentsync: error: ") and hint.startswith("  hint: "), (name, err)
    assert needle.lower() in message.lower(), (name, err)
    assert "Traceback" not in err and "Errno" not in err and "a audio" not in err, (name, err)
    assert "FaceTrack" not in err and "max_gap" not in err, (name, err)  # no Python names for a command-line user
    for path in re.findall(r"/\S+", message):  # a path is named once, not repeated by FFmpeg
        assert message.count(path) == 1, (name, err)
    return message


def test_each_mistake_is_one_line_and_a_hint_before_any_model(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out.mp4"
    # A U-Net checkpoint that does not exist: had any weights been looked for, that error would come first.
    models = ["--unet-checkpoint", str(tmp_path / "missing_unet.pt"), "--offline", "--quiet"]
    before = snapshot(inputs["root"])
    slowest = 0.0
    for name, (args, needle) in error_cases(inputs, out).items():
        start = time.perf_counter()
        code = main(["infer", *args, *models])
        slowest = max(slowest, time.perf_counter() - start)
        captured = capsys.readouterr()
        assert code == 2, name
        assert captured.out == "", name
        check_error(captured.err, needle, name)
        assert "missing_unet" not in captured.err, name
    print(f"slowest check: {slowest:.2f} s")
    assert slowest < 3.0  # within a second on an idle machine; slack for a loaded one
    assert snapshot(inputs["root"]) == before  # inputs untouched, nothing written beside them
    assert list(tmp_path.iterdir()) == []  # nothing in the working or output folder


def test_hints_show_values_that_work(inputs, tmp_path, capsys):
    """The example a hint gives is accepted where the value it corrects was refused."""
    for option, bad in (("--face-box", "100,100,100,100"), ("--face-point", "1,2,3")):
        main(["infer", "--video", str(VIDEO), "--audio", str(inputs["speech"]), "--output", str(tmp_path / "o.mp4"),
              option, bad])
        hint = capsys.readouterr().err.splitlines()[1]
        example = re.search(rf"{option} (\S+)", hint).group(1)
        values = tuple(float(v) for v in example.split(","))
        FaceSelection(**{option[7:]: values})  # no error


def test_messages_for_the_usual_slips(inputs, tmp_path, capsys):
    def error(*args: str) -> list[str]:
        assert main(["infer", *args]) == 2
        return capsys.readouterr().err.splitlines()

    out = str(tmp_path / "o.mp4")
    message, hint = error("--video", str(inputs["cut"]), "--audio", str(inputs["speech"]), "--output", out)
    assert re.search(r"only \d+ of the 20 frames its index lists can be decoded", message), message
    assert "--allow-truncated" in hint
    message, hint = error("--video", str(inputs["notes"]), "--audio", str(inputs["speech"]), "--output", out)
    assert message == f"latentsync: error: cannot read {inputs['notes']} as video: invalid data found when " \
                      "processing input"
    message, hint = error("--video", str(VIDEO), "--audio", str(inputs["speech"]), "--output", str(inputs["taken"]))
    assert hint.count("taken.mp4") == 0 and "another name" in hint  # no taken.mp4/result.mp4
    message, hint = error("--video", str(VIDEO), "--audio", str(inputs["speech"]), "--output", str(inputs["folder"]))
    assert hint.endswith(f"{inputs['folder'] / 'result.mp4'}")
    message, hint = error("--video", str(VIDEO), "--audio", str(inputs["speech"]), "--output", out,
                          "--track", str(inputs["no width"]))
    assert "has no 'width' entry" in message and "--save-track" in hint
    message, hint = error("--video", str(VIDEO), "--output", out)
    assert message == "latentsync: error: the following arguments are required: --audio"


def test_help_shows_what_is_required(capsys):
    with pytest.raises(SystemExit):
        main(["infer", "--help"])
    usage = " ".join(capsys.readouterr().out.split("options:")[0].split())
    assert "(--video VIDEO | --image IMAGE | --avatar AVATAR) --audio AUDIO --output OUTPUT" in usage
    assert "--allow-truncated" in usage


def test_an_unreadable_file_is_a_permission_error(inputs):
    """Run as an unprivileged user in a forked child (root reads everything), with a file nobody may read."""
    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o777)
        locked = folder / "locked.mp4"
        locked.write_bytes(VIDEO.read_bytes())
        locked.chmod(0)
        speech = folder / "speech.wav"
        speech.write_bytes(inputs["speech"].read_bytes())
        speech.chmod(0o644)
        err = _run_unprivileged(["infer", "--video", str(locked), "--audio", str(speech), "--output",
                                 str(folder / "out.mp4")])
        message = check_error(err, "permission denied", "locked video")
        assert "ffmpeg" not in err.lower(), err
        assert message == f"latentsync: error: cannot read {locked}: permission denied"
        assert sorted(p.name for p in folder.iterdir()) == ["locked.mp4", "speech.wav"]
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def _run_unprivileged(argv: list[str]) -> str:
    """`main(argv)` in a child process as user `nobody` (when run as root); returns what it wrote to stderr."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, run, report through the pipe
        code = 1
        try:
            os.close(read)
            os.dup2(write, 2)
            sys.stderr = os.fdopen(2, "w", closefd=False)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            code = main(argv)
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        err = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2, err
    return err


@pytest.mark.parametrize("case", ["missing video", "zero steps", "cut-off video", "track of another video",
                                  "missing U-Net checkpoint"])
def test_benchmark_time_to_an_input_error(inputs, tmp_path, case):
    """From process start to exit, for a fresh `python -m latentsync.cli infer`: under a second on an idle machine,
    with slack for a loaded one. The checks load no heavy module."""
    cases = error_cases(inputs, tmp_path / "out.mp4")
    cases["missing U-Net checkpoint"] = (["--video", str(VIDEO), "--audio", str(inputs["speech"]), "--output",
                                          str(tmp_path / "out.mp4"), "--unet-checkpoint", "unet.pt"], "unet.pt")
    args, needle = cases[case]
    probe = ("import runpy, sys; sys.argv = ['latentsync', 'infer', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('latentsync.cli', run_name='__main__')\n"
             "except SystemExit as exit:\n"
             f"    print([m for m in {HEAVY!r} if m in sys.modules]); raise\n")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    seconds = time.perf_counter() - start
    print(f"time to the input error ({case}): {seconds:.2f} s")
    assert result.returncode == 2
    check_error(result.stderr, needle, case)
    assert result.stdout.strip() == "[]"  # no torch, diffusers, detector or OpenCV
    assert seconds < 3.0


# ---- accepted inputs: tiny random models in the published formats ----------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[str]:
    paths = write_random_models(tmp_path_factory.mktemp("tiny"), "tiny")
    return ["--version", "1.5", "--unet-config", str(paths["unet_config"]), "--unet-checkpoint", str(paths["unet"]),
            "--vae", str(paths["vae"]), "--whisper", str(paths["whisper"])]


def test_a_cut_off_odd_sized_video_with_allow_truncated(inputs, tiny, tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.chdir(tmp_path)
    video = inputs["cut odd"]
    info = probe_video(video)
    assert info.truncated and info.listed_frames == 20 and 0 < info.num_frames < 20
    assert (info.width, info.height) == (301, 541)
    before = snapshot(inputs["root"])
    out = tmp_path / "out.mp4"
    code = main(["infer", "--video", str(video), "--audio", str(inputs["speech"]), "--output", str(out),
                 "--allow-truncated", *tiny, *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith(f"8 frames (0.32 s) from {info.num_frames} video frames")
    assert lines[1] == (f"warning: cut odd.mp4 is cut off: lip-synced the {info.num_frames} frames that decode, "
                        "of the 20 its index lists")
    assert lines[2] == ("warning: the 301x541 frames are padded by one pixel to 302x542 (the edge repeated): "
                        "H.264 in 4:2:0 needs even sizes")
    written = probe_video(out)
    assert (written.width, written.height, written.num_frames, written.has_audio) == (302, 542, 8, True)
    frames = np.stack([f for _, f in read_frames(out)])
    source = np.stack([f for _, f in read_frames(video)])[frame_schedule(info.num_frames, 8)]
    assert np.abs(frames[:, :541, :301].astype(int) - source).mean() < 6  # the same pictures, lip-synced
    edge = np.abs(frames[:, :, 301].astype(int) - frames[:, :, 300]).mean()
    assert edge < 3  # the padding repeats the edge (up to 4:2:0 chroma)
    assert snapshot(inputs["root"]) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_the_api_checks_its_options_too(tiny):
    """RunOptions and from_pretrained refuse the same values as the command line, with the same messages."""
    for bad in ({"num_inference_steps": 0}, {"num_inference_steps": 2.5}, {"guidance_scale": float("nan")},
                {"crf": -1}, {"seed": True}, {"allow_truncated": "yes"}, {"progress": None}):
        with pytest.raises(InputError):
            RunOptions(**bad).check()
    parts = dict(zip(tiny[2::2], tiny[3::2]))
    for bad, needle in (({"resolution": 200}, "multiple of 64"), ({"resolution": -64}, "multiple of 64"),
                        ({"device": "gpu"}, "unknown device"), ({"dtype": "half"}, "precision")):
        with pytest.raises(InputError, match=needle):
            LipSyncPipeline.from_pretrained("1.5", unet_config=parts["--unet-config"], unet_checkpoint=parts[
                "--unet-checkpoint"], vae=parts["--vae"], whisper=parts["--whisper"], offline=True, **bad)
