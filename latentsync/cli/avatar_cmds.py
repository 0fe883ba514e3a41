"""`latentsync avatar`: prepare a video once (face track, matrices, VAE latents) for fast repeated lip-sync jobs."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .infer import add_face_options, add_model_options, face_selection, load_pipeline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("avatar", help="prepare a video for repeated jobs (then: infer --avatar FILE --audio ...)")
    p.add_argument("--video", required=True, help="the video to prepare")
    p.add_argument("--output", required=True, help="avatar file to write (e.g. talk.avatar)")
    add_model_options(p)
    f = add_face_options(p)
    f.add_argument("--track", help="use a face track saved with --save-track or `latentsync track`")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_avatar)


def run_avatar(args: argparse.Namespace) -> None:
    from ..media import probe_video
    from ..pipeline.avatar import make_avatar

    probe_video(args.video)  # a bad input fails before any weights load
    if args.output == args.video:
        raise InputError(f"the avatar would overwrite its video {args.video}", "choose another --output")
    selection = face_selection(args)
    pipe = load_pipeline(args)
    path = make_avatar(pipe, args.video, args.output, selection=selection, track=args.track, progress=not args.quiet)
    print(f"wrote {path}")
