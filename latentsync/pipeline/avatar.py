"""Prepared avatars: what a lip-sync job computes from the video alone, stored once so that every later job on the
same video skips it.

    latentsync avatar --video talk.mp4 --output talk.avatar
    latentsync infer --avatar talk.avatar --audio speech.wav --output out.mp4

An avatar file (a compressed .npz, read without pickles) holds the video file itself (the frames the output is
made of), its face track, the alignment matrices of every frame, and for every frame with a face the U-Net's
conditioning latents (mask channel, masked face, whole face) in the model's precision: face detection, matrices and
the VAE encoder are done. A job with it runs Whisper, the (cheap) alignment warp whose unmasked upper face the
output keeps, the U-Net, the VAE decoder, paste-back and encoding. The file records the VAE weights, resolution,
mouth mask and precision it was made with, and a pipeline with any other refuses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import InputError
from ..face import FaceSelection, FaceTrack, detect_video_track, load_video_track, track_matrices
from ..fileio import atomic_path
from ..media import FPS, probe_video, read_batches

AVATAR_FORMAT = "latentsync-avatar-1"
_ENCODE_FRAMES = 16  # faces encoded at once (the chunk size of a normal run, so that the latents are the same)
_HINT = "make the avatar again with this model and settings (latentsync avatar --video ... --output ...)"


def tensor_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex, first 16 digits) over the names, shapes, dtypes and bytes of a state dict."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def avatar_settings(pipe: Any) -> dict[str, object]:
    """What the stored data of a `LipSyncPipeline` depends on besides the video: an avatar is used only where these
    are equal."""
    return {
        "vae": tensor_fingerprint(pipe.vae.state_dict()),
        "resolution": pipe.resolution,
        "mask": tensor_fingerprint({"mask": pipe.mask}),
        "dtype": str(pipe.dtype).removeprefix("torch."),
    }


def make_avatar(
    pipe: Any,
    video: str | os.PathLike,
    output: str | os.PathLike,
    *,
    selection: FaceSelection | None = None,
    track: str | os.PathLike | FaceTrack | None = None,
    progress: bool = False,
) -> Path:
    """Prepare `video` for `pipe` and write the avatar file `output` (atomically); returns its path."""
    video, output = Path(video), Path(output)
    info = probe_video(video)
    if output.resolve() == video.resolve():
        raise InputError(f"the avatar would overwrite its video {video}", "choose another --output")
    if track is None:
        total = info.frames_at(FPS)
        face_track = detect_video_track(video, pipe.detector(), selection, progress=progress, total=total)
    else:
        face_track = load_video_track(track, info)
    if not face_track.present.any():
        raise InputError(f"no face found in any frame of {video}", "an avatar needs a video that shows a face")
    matrices = track_matrices(pipe.aligner, face_track)
    latents = []
    # Consecutive video frames, 16 at a time: what a normal run encodes when the speech is not longer than the video.
    for start, frames in zip(range(0, face_track.num_frames, _ENCODE_FRAMES), read_batches(video, _ENCODE_FRAMES, FPS)):
        present = face_track.present[start : start + len(frames)]
        if present.any():
            faces = pipe.aligner.warp(frames[present], matrices[start : start + len(frames)][present])
            faces = torch.from_numpy(np.ascontiguousarray(faces.transpose(0, 3, 1, 2)))
            latents.append(pipe.conditioning_latents(faces).cpu())
    stored = torch.cat(latents)  # in the model's precision (float16 on a GPU), so that runs match normal ones
    meta = {
        "format": AVATAR_FORMAT,
        "latentsync": __version__,
        "settings": avatar_settings(pipe),
        "video": {"name": video.name, "width": info.width, "height": info.height, "frames": info.frames_at(FPS)},
        "track": {"width": face_track.width, "height": face_track.height, "backend": face_track.backend,
                  "fps": face_track.fps, "meta": face_track.meta},
        "latents_dtype": str(stored.dtype).removeprefix("torch."),
    }
    # bfloat16 has no numpy type: its bits travel as int16.
    raw = stored.view(torch.int16) if stored.dtype == torch.bfloat16 else stored
    with atomic_path(output, suffix=".npz") as tmp:
        np.savez_compressed(
            tmp, meta=np.array(json.dumps(meta)), video=np.fromfile(video, np.uint8), matrices=matrices,
            latents=raw.numpy(), present=face_track.present, interpolated=face_track.interpolated,
            points=face_track.points, boxes=face_track.boxes,
        )
    return output


@dataclass
class Avatar:
    """A loaded avatar file. `video` is the stored video, written to a temporary folder removed with the object."""

    path: Path
    meta: dict
    track: FaceTrack
    matrices: np.ndarray  # (video frames, 2, 3), NaN where no face
    latents: torch.Tensor  # (frames with a face, 9, R/8, R/8) conditioning, in video frame order
    video: Path
    _folder: tempfile.TemporaryDirectory

    @classmethod
    def load(cls, path: str | os.PathLike) -> Avatar:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"avatar file not found: {path}", "make one with: latentsync avatar --video ... --output ...")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") != AVATAR_FORMAT:
                    raise ValueError(f"not a {AVATAR_FORMAT} file")
                t = meta["track"]
                track = FaceTrack(present=data["present"], interpolated=data["interpolated"], points=data["points"],
                                  boxes=data["boxes"], width=t["width"], height=t["height"], backend=t["backend"],
                                  fps=t["fps"], meta=t["meta"])
                latents = torch.from_numpy(data["latents"])
                if meta["latents_dtype"] == "bfloat16":
                    latents = latents.view(torch.bfloat16)
                folder = tempfile.TemporaryDirectory(prefix="latentsync-avatar-")
                video = Path(folder.name) / meta["video"]["name"]
                data["video"].tofile(video)
                matrices = data["matrices"]
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise InputError(f"cannot read the avatar {path}: {exc}", _HINT) from exc
        if len(latents) != int(track.present.sum()) or len(matrices) != track.num_frames:
            raise InputError(f"the avatar {path} is inconsistent: {len(latents)} latents for "
                             f"{int(track.present.sum())} frames with a face", _HINT)
        return cls(path, meta, track, matrices, latents, video, folder)

    def check(self, pipe: Any) -> None:
        """Raise InputError, naming every difference, unless `pipe` has the weights and settings the avatar was
        made with."""
        made, now = self.meta["settings"], avatar_settings(pipe)
        names = {"vae": "VAE weights", "resolution": "face resolution", "mask": "mouth mask", "dtype": "precision"}
        differences = [f"{names[k]} {made.get(k)} (now {now[k]})" for k in now if made.get(k) != now[k]]
        if differences:
            raise InputError(f"the avatar {self.path.name} was made with other weights or settings: "
                             + "; ".join(differences), _HINT)
