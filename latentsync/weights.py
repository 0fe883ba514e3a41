"""Which weight files each published LatentSync version needs, where they come from, and fetching them.

Local layout (the published `checkpoints/` folder, so an existing LatentSync checkout can be reused as is):

    <checkpoint_dir>/latentsync_unet.pt
    <checkpoint_dir>/whisper/tiny.pt
    <checkpoint_dir>/stable_syncnet.pt
    <checkpoint_dir>/sd-vae-ft-mse/{config.json, diffusion_pytorch_model.safetensors}
    <checkpoint_dir>/auxiliary/models/buffalo_l/{det_10g.onnx, 2d106det.onnx}
    <checkpoint_dir>/auxiliary/{vgg16-397923af.pth, vit_g_hybrid_pt_1200e_ssv2_ft.pth, ...}

Without a checkpoint dir, Hub files live in the Hugging Face cache and archive files in `~/.cache/latentsync`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .errors import MissingWeightsError
from .fileio import atomic_path

VAE_REPO = "stabilityai/sd-vae-ft-mse"  # the published VAE (its latent scaling: latentsync.models.vae)
VAE_FOLDER = "sd-vae-ft-mse"  # its folder in the checkpoints/ layout
VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
LPIPS_VGG_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"
# FID's Inception-v3 (the TensorFlow 2015-12-05 graph ported to PyTorch by pytorch-fid; torchvision key layout).
FID_INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
BUFFALO_L_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"


@dataclass(frozen=True)
class Version:
    """A published release: its Hub repo, face resolution and U-Net config (in latentsync/configs/unet)."""

    repo: str
    resolution: int
    unet_config: str


VERSIONS = {
    "1.5": Version("ByteDance/LatentSync-1.5", 256, "stage2.yaml"),
    "1.6": Version("ByteDance/LatentSync-1.6", 512, "stage2_512.yaml"),
}
DEFAULT_VERSION = "1.6"


@dataclass(frozen=True)
class WeightFile:
    """One file: its path inside the local checkpoint folder and its origin (a Hub repo file or a zip archive)."""

    local: str
    repo: str | None = None  # None: the version's own repo
    filename: str | None = None  # path inside the repo (default: `local`)
    archive_url: str | None = None  # zip holding the file under its base name
    url: str | None = None  # a plain file on the web

    def origin(self, version: Version) -> str:
        if self.archive_url or self.url:
            return self.archive_url or self.url
        return f"hf://{self.repo or version.repo}/{self.filename or self.local}"


# Components by name; each is one or more files.
COMPONENTS: dict[str, tuple[WeightFile, ...]] = {
    "unet": (WeightFile("latentsync_unet.pt"),),
    "whisper": (WeightFile("whisper/tiny.pt"),),
    "syncnet": (WeightFile("stable_syncnet.pt"),),
    "vae": tuple(WeightFile(f"{VAE_FOLDER}/{f}", repo=VAE_REPO, filename=f) for f in VAE_FILES),
    "face": tuple(
        WeightFile(f"auxiliary/models/buffalo_l/{f}", archive_url=BUFFALO_L_URL) for f in ("det_10g.onnx", "2d106det.onnx")
    ),
    "vgg16": (WeightFile("auxiliary/vgg16-397923af.pth"),),
    "lpips": (WeightFile("auxiliary/lpips_vgg_v0.1.pth", url=LPIPS_VGG_URL),),
    "videomae": (WeightFile("auxiliary/vit_g_hybrid_pt_1200e_ssv2_ft.pth"),),
    # Evaluation and the data pipeline's filters.
    "syncnet_v2": (WeightFile("auxiliary/syncnet_v2.model"),),  # original SyncNet (Sync-C / Sync-D, sync filter)
    "s3fd": (WeightFile("auxiliary/sfd_face.pth"),),  # S3FD face detector of the evaluation
    "i3d": (WeightFile("auxiliary/i3d_torchscript.pt"),),  # FVD features
    "hyperiqa": (WeightFile("auxiliary/koniq_pretrained.pkl"),),  # visual-quality filter
    "inception": (WeightFile("auxiliary/pt_inception-2015-12-05-6726825d.pth", url=FID_INCEPTION_URL),),  # FID
}
INFERENCE = ("unet", "whisper", "vae", "face")
TRAINING = ("unet", "whisper", "vae", "face", "syncnet", "vgg16", "lpips", "videomae")
EVALUATION = ("syncnet_v2", "s3fd", "i3d", "inception", "vgg16", "lpips")
DATA_FILTERS = ("syncnet_v2", "s3fd", "hyperiqa")


def get_version(version: str) -> Version:
    if version not in VERSIONS:
        raise MissingWeightsError(f"unknown LatentSync version {version!r}", f"choose one of {', '.join(VERSIONS)}")
    return VERSIONS[version]


def archive_cache() -> Path:
    return Path(os.environ.get("LATENTSYNC_CACHE", Path.home() / ".cache" / "latentsync"))


def fetch_command(version: str, components: Iterable[str], checkpoint_dir: str | os.PathLike | None) -> str:
    cmd = f"latentsync download --version {version} --components {','.join(components)}"
    return cmd + (f" --checkpoint-dir {checkpoint_dir}" if checkpoint_dir else "")


def _find_local(f: WeightFile, version: Version, checkpoint_dir: Path | None) -> Path | None:
    """The file if it is already on disk: in the checkpoint folder, the archive cache or the Hub cache."""
    if checkpoint_dir is not None:
        path = checkpoint_dir / f.local
        return path if path.is_file() else None
    if f.archive_url or f.url:
        path = archive_cache() / f.local
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(f.repo or version.repo, f.filename or f.local)
    return Path(hit) if isinstance(hit, str) else None


def _download(f: WeightFile, version: Version, checkpoint_dir: Path | None) -> Path:
    if f.archive_url or f.url:
        root = checkpoint_dir if checkpoint_dir is not None else archive_cache()
        if f.archive_url:
            _extract_archive(f.archive_url, (root / f.local).parent)
        else:
            _fetch_url(f.url, root / f.local)
        return root / f.local
    from huggingface_hub import hf_hub_download

    repo, filename = f.repo or version.repo, f.filename or f.local
    if checkpoint_dir is None:
        return Path(hf_hub_download(repo, filename))
    # Hub path and local path differ for the VAE (a sub-folder of its own): download to a temp dir, then move.
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=checkpoint_dir) as tmp:
        got = Path(hf_hub_download(repo, filename, local_dir=tmp))
        target = checkpoint_dir / f.local
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(got, target)
    return target


def _fetch_url(url: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, urllib.request.urlopen(url) as response, open(tmp, "wb") as out:
        shutil.copyfileobj(response, out)


def _extract_archive(url: str, folder: Path) -> None:
    """Download a zip and place its files (by base name) into `folder`, atomically per file."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        zip_path = Path(tmp) / "archive.zip"
        with urllib.request.urlopen(url) as response, open(zip_path, "wb") as out:
            shutil.copyfileobj(response, out)
        with zipfile.ZipFile(zip_path) as archive:
            for member in archive.infolist():
                if member.is_dir():
                    continue
                part = Path(tmp) / Path(member.filename).name
                with archive.open(member) as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(part, folder / part.name)


def resolve(
    components: Iterable[str],
    version: str = DEFAULT_VERSION,
    checkpoint_dir: str | os.PathLike | None = None,
    offline: bool = False,
) -> dict[str, Path]:
    """Local paths of the components, keyed by component name ("unet", "vae", ...).

    A one-file component maps to its file; a component of several files (the VAE, the InsightFace models) maps to
    the folder that holds them. Missing files are downloaded unless `offline`; offline, every missing file is named
    in one error with the command that fetches them.
    """
    components = list(dict.fromkeys(components))
    ver = get_version(version)
    root = Path(checkpoint_dir).expanduser() if checkpoint_dir is not None else None
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown:
        raise MissingWeightsError(f"unknown weight components: {', '.join(unknown)}", f"known: {', '.join(COMPONENTS)}")
    wanted = [f for c in components for f in COMPONENTS[c]]
    found = {f.local: _find_local(f, ver, root) for f in wanted}
    missing = [f for f in wanted if found[f.local] is None]
    if missing and offline:
        where = f"in {root}" if root else "in the local caches"
        listing = "; ".join(f"{f.local} (from {f.origin(ver)})" for f in missing)
        raise MissingWeightsError(
            f"missing LatentSync {version} weights {where}: {listing}",
            f"run `{fetch_command(version, components, checkpoint_dir)}` on a machine with internet access",
        )
    for f in missing:
        try:
            found[f.local] = _download(f, ver, root)
        except (OSError, ValueError) as exc:  # network errors, HTTP errors and disk errors all derive from these
            raise MissingWeightsError(
                f"could not download {f.local} from {f.origin(ver)}: {exc}",
                "check the network (or HF_ENDPOINT / HF_TOKEN), or copy the file into the checkpoint folder and use --offline",
            ) from exc
    paths = {}
    for component in components:
        files = [Path(found[f.local]) for f in COMPONENTS[component]]
        paths[component] = files[0] if len(files) == 1 else files[0].parent
    return paths


def has_components(components: Iterable[str], version: str = DEFAULT_VERSION, checkpoint_dir=None) -> bool:
    """True when every file of the components is already on disk (no download is attempted)."""
    ver = get_version(version)
    root = Path(checkpoint_dir).expanduser() if checkpoint_dir is not None else None
    return all(_find_local(f, ver, root) is not None for c in components for f in COMPONENTS[c])
