"""`latentsync infer` (lip-sync a video to a speech track) and `latentsync demo` (the bundled clip)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from .. import weights
from ..errors import InputError
from ..fileio import check_readable
from ..face.detectors import BACKENDS
from ..packaged import DEMO_AUDIO, DEMO_VIDEO, packaged_file
from ..pipeline.job import DEFAULT_GUIDANCE, DEFAULT_STEPS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("infer", help="lip-sync a video (or a still photo) to a speech track")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--video", help="input video (any fps and container ffmpeg reads), or a still photo")
    source.add_argument("--image", help="input photo (png, jpg, webp...): a talking video as long as the speech")
    source.add_argument("--avatar", help="a prepared avatar (`latentsync avatar`) instead of a video: no face detection")
    p.add_argument("--audio", required=True, help="speech track (wav, mp3, m4a, flac, or a video's audio)")
    p.add_argument("--output", required=True, help="output video (.mp4, .mov or .mkv)")
    p.add_argument("--allow-truncated", action="store_true",
                   help="lip-sync the frames that decode of a cut-off video (with a warning) instead of failing")
    add_run_options(p)
    p.set_defaults(run=run_infer)

    p = sub.add_parser("demo", help="lip-sync the bundled demo clip (downloads the weights on first use)")
    p.add_argument("--output", default="latentsync_demo.mp4", help="output video (default: %(default)s)")
    add_run_options(p)
    p.set_defaults(run=run_demo)

    p = sub.add_parser("track", help="detect and follow the face of a video; save the track for `infer --track`")
    p.add_argument("--video", required=True, help="input video")
    p.add_argument("--output", required=True, help="track file to write (.json, human-editable, or .npz)")
    p.add_argument("--checkpoint-dir", help="weights folder (for the insightface backend)")
    p.add_argument("--offline", action="store_true", help="never download weights")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_face_options(p)
    p.set_defaults(run=run_track)


def add_run_options(p: argparse.ArgumentParser) -> None:
    add_model_options(p)

    s = p.add_argument_group("sampling")
    s.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="denoising steps (default: %(default)s; 20-50 typical)")
    s.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE,
                   help="audio guidance scale (default: %(default)s; 1.0-3.0)")
    s.add_argument("--seed", type=int, help="random seed (default: random, printed in the summary)")
    s.add_argument("--segmenting", default="seamless", choices=["seamless", "reference"],
                   help="Whisper segmentation of long audio (reference = published, with 30 s seams)")
    s.add_argument("--step-reuse", type=int, default=1, metavar="N",
                   help="run the U-Net's deep branch every N-th step only (DeepCache; 1 = exact, 3 ~ 2x faster)")
    s.add_argument("--scheduler", default="ddim", choices=["ddim", "dpm++"],
                   help="sampler: ddim (published) or dpm++ (DPM-Solver++, good at 10 steps)")
    s.add_argument("--batch-chunks", type=int, default=1, metavar="N",
                   help="16-frame chunks per U-Net call when they fit in GPU memory (default: %(default)s)")
    s.add_argument("--vae-slice", type=int, default=4, metavar="N",
                   help="frames the VAE decodes at once (default: %(default)s; lower needs less GPU memory)")

    f = add_face_options(p)
    f.add_argument("--track", help="reuse a face track saved with --save-track or `latentsync track`")
    f.add_argument("--save-track", help="save the face track (.json or .npz) for inspection or re-use")

    o = p.add_argument_group("output")
    o.add_argument("--crf", type=int, default=18, help="H.264 quality, lower is better (default: %(default)s)")
    o.add_argument("--quiet", action="store_true", help="no progress bars or summary")


def add_model_options(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The options that choose and load the models (shared by infer, demo, serve and batch)."""
    m = p.add_argument_group("model")
    m.add_argument("--version", default=weights.DEFAULT_VERSION, choices=sorted(weights.VERSIONS),
                   help="published release: 1.5 (256 px faces) or 1.6 (512 px) (default: %(default)s)")
    m.add_argument("--checkpoint-dir", help="weights folder in the published checkpoints/ layout (default: caches)")
    m.add_argument("--offline", action="store_true", help="never download; fail with the fix if weights are missing")
    m.add_argument("--unet-config", help="U-Net YAML in the published layout (model: and data: sections)")
    m.add_argument("--unet-checkpoint", help="U-Net weights (.pt or .safetensors)")
    m.add_argument("--vae", help="diffusers AutoencoderKL folder or Hub id")
    m.add_argument("--whisper", help="openai-whisper checkpoint (tiny.pt)")
    m.add_argument("--resolution", type=int, help="face resolution (default: from the U-Net config)")
    m.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    m.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="model precision (default: float16 on CUDA, float32 on CPU)")
    m.add_argument("--compile", action="store_true", help="torch.compile the U-Net and VAE decoder (slow first chunk)")
    return m


def add_face_options(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Face detector and selection options (shared by infer, demo and track)."""
    f = p.add_argument_group("faces")
    f.add_argument("--face-backend", default="auto", choices=BACKENDS,
                   help="face detector (auto: insightface when its weights are present, else mediapipe)")
    f.add_argument("--face-index", type=int, help="pick the N-th face (left to right) where faces first appear")
    f.add_argument("--face-point", help="pick the face containing X,Y (pixels) where faces first appear")
    f.add_argument("--face-box", help="pick the face best overlapping X1,Y1,X2,Y2 where faces first appear")
    f.add_argument("--max-gap", type=int, help="bridge a face missing for at most this many frames")
    return f


def face_selection(args: argparse.Namespace):
    """The FaceSelection described by the --face-* options."""
    from ..face.track import EXAMPLE_BOX, FaceSelection

    EXAMPLES = {"--face-point": "180,200", "--face-box": EXAMPLE_BOX}

    def numbers(text: str | None, count: int, option: str) -> tuple[float, ...] | None:
        if text is None:
            return None
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != count or not all(math.isfinite(v) for v in values):
            raise InputError(f"{option} expects {count} comma-separated numbers (pixels), got {text!r}",
                             f"e.g. {option} {EXAMPLES[option]}")
        return values

    chosen = [o for o in ("face_index", "face_point", "face_box") if getattr(args, o) is not None]
    if len(chosen) > 1:
        raise InputError("choose the face with only one of --face-index, --face-point, --face-box",
                         "--face-index counts from the left; --face-point and --face-box are in pixels")
    kwargs = {"index": args.face_index, "point": numbers(args.face_point, 2, "--face-point"),
              "box": numbers(args.face_box, 4, "--face-box")}
    if args.max_gap is not None:
        kwargs["max_gap"] = args.max_gap
    return FaceSelection(**kwargs)


def resolve_device(device: str, dtype: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device} asked for, but no CUDA device is available", "use --device cpu")
    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") else "float32"
    return torch.device(device), getattr(torch, dtype)


def load_pipeline(args: argparse.Namespace, version: str | None = None, device: str | None = None):
    """The LipSyncPipeline of the model options and --face-backend (`version`, `device`: instead of the options')."""
    from ..pipeline import LipSyncPipeline

    torch_device, dtype = resolve_device(device or args.device, args.dtype)
    return LipSyncPipeline.from_pretrained(
        version or args.version,
        checkpoint_dir=args.checkpoint_dir,
        offline=args.offline,
        device=torch_device,
        dtype=dtype,
        unet_config=args.unet_config,
        unet_checkpoint=args.unet_checkpoint,
        vae=args.vae,
        whisper=args.whisper,
        resolution=args.resolution,
        face_backend=args.face_backend,
    )


def run_pipeline(args: argparse.Namespace, video: str, audio: str | None, still: bool = False) -> None:
    """Check every input and option, then load the models and run; `still`: the input must be a photo (--image)."""
    from ..pipeline.job import RunOptions, check_inputs, check_model_options

    if args.quiet:
        logging.getLogger("latentsync").setLevel(logging.WARNING)
    options = RunOptions(
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        seed=args.seed,
        segmenting=args.segmenting,
        selection=face_selection(args),
        track=args.track,
        save_track=args.save_track,
        progress=not args.quiet,
        crf=args.crf,
        allow_truncated=getattr(args, "allow_truncated", False),
        step_reuse=args.step_reuse,
        scheduler=args.scheduler,
        batch_chunks=args.batch_chunks,
        vae_slice=args.vae_slice,
        compile=args.compile,
        avatar=getattr(args, "avatar", None),
    )
    check_model_options(args.resolution, args.device)
    job = check_inputs(video, audio, args.output, options)  # bad inputs fail here, before any weights are loaded
    if still and not job.info.still:
        raise InputError(f"--image expects a still photo, but {video} is a video ({job.info.codec})",
                         "pass videos with --video")
    for kind, path in (("U-Net config", args.unet_config), ("U-Net checkpoint", args.unet_checkpoint),
                       ("Whisper checkpoint", args.whisper)):
        if path is not None:  # a mistyped model file is also reported before torch loads
            check_readable(path, kind)
    pipe = load_pipeline(args)
    result = pipe(job)
    if not args.quiet:
        print(result.report.summary())
    else:
        for warning in result.report.warnings:
            print(f"latentsync: warning: {warning}", file=sys.stderr)


def run_infer(args: argparse.Namespace) -> None:
    run_pipeline(args, args.image or args.video, args.audio, still=args.image is not None)


def run_demo(args: argparse.Namespace) -> None:
    run_pipeline(args, str(packaged_file(DEMO_VIDEO)), str(packaged_file(DEMO_AUDIO)))


def run_track(args: argparse.Namespace) -> None:
    from ..face import create_detector, detect_video_track
    from ..media import probe_video

    if Path(args.output).suffix.lower() not in (".json", ".npz"):
        raise InputError(f"a face track is saved as .json or .npz, got {args.output}", "e.g. --output track.json")
    info = probe_video(args.video)  # a bad input fails before the detector loads
    selection = face_selection(args)
    detector = create_detector(args.face_backend, checkpoint_dir=args.checkpoint_dir, offline=args.offline)
    track = detect_video_track(args.video, detector, selection, progress=not args.quiet, total=info.frames_at())
    track.save(args.output)  # detection has logged its summary
    print(f"wrote {args.output}")
