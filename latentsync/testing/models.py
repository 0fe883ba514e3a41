"""Random-weight models written in the published file formats, for tests and benchmarks.

No published weights can be downloaded in CI, so the loaders are exercised with files of the real formats:
the U-Net as `{"state_dict", "global_step"}` `.pt` plus a YAML in the published layout, Whisper as an
openai-whisper `{"dims", "model_state_dict"}` file, the VAE as a diffusers folder. "tiny" models run end to end
on a CPU in seconds; "full" models have the published sizes (for speed and memory measurements on a GPU);
"mid" models are a quarter of the published width (U-Net and VAE; Whisper tiny as published), for CPU speed
measurements that keep the published structure and its balance of costs.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import torch
import yaml
from diffusers import AutoencoderKL

from ..models.whisper import WhisperDims, WhisperEncoder
from ..config import load_config
from ..models.unet import LatentSyncUNet, UNetConfig
from ..pipeline.loading import packaged_unet_config

# sd-vae-ft-mse's architecture (the published VAE): diffusers AutoencoderKL with these fields.
FULL_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": [128, 256, 512, 512], "sample_size": 256,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
TINY_VAE = {**FULL_VAE, "layers_per_block": 1, "block_out_channels": [32, 32, 32, 32], "sample_size": 64}
MID_VAE = {**FULL_VAE, "block_out_channels": [32, 64, 128, 128]}
MID_UNET = {"block_out_channels": [96, 160, 320, 320]}  # a quarter of the width; 96: GroupNorm needs 32 | C
FULL_WHISPER = WhisperDims(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4)
TINY_WHISPER = WhisperDims(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=4)


def write_random_models(folder: str | Path, size: str = "tiny", seed: int = 0, resolution: int | None = None) -> dict[str, Path]:
    """Write a U-Net config + checkpoint, a Whisper checkpoint and a VAE folder; return their paths.

    size "tiny": 32-channel U-Net cross-attending to a 64-wide Whisper, 32-channel VAE, resolution 64 by default.
    size "full": the published 1.5 architecture (1.27 B-parameter U-Net, Whisper tiny, sd-vae-ft-mse), 256 px.
    size "mid": "full" at a quarter of the width of the U-Net and the VAE, 256 px.
    """
    if size not in ("tiny", "mid", "full"):
        raise ValueError(f"size must be 'tiny', 'mid' or 'full', got {size!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = load_config(packaged_unet_config("1.5"))
    whisper_dims = TINY_WHISPER if size == "tiny" else FULL_WHISPER
    if size == "tiny":
        config["model"] = {**config["model"], "block_out_channels": [32, 32, 32, 32],
                           "cross_attention_dim": whisper_dims.n_audio_state}
    if size == "mid":
        config["model"] = {**config["model"], **MID_UNET}
    config["data"] = {**config.get("data", {}), "resolution": resolution or (64 if size == "tiny" else 256)}
    paths = {"unet_config": folder / "unet.yaml", "unet": folder / "latentsync_unet.pt",
             "whisper": folder / "whisper" / "tiny.pt", "vae": folder / "vae"}
    paths["unet_config"].write_text(yaml.safe_dump({"data": config["data"], "model": config["model"]}, sort_keys=False))

    unet = LatentSyncUNet(UNetConfig.from_dict(config["model"]))
    _perturb_zero_layers(unet)
    torch.save({"state_dict": unet.state_dict(), "global_step": 0}, paths["unet"])
    del unet

    encoder = WhisperEncoder(whisper_dims)
    paths["whisper"].parent.mkdir(exist_ok=True)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    torch.save({"dims": asdict(whisper_dims), "model_state_dict": state}, paths["whisper"])

    vae = AutoencoderKL(**copy.deepcopy({"tiny": TINY_VAE, "mid": MID_VAE, "full": FULL_VAE}[size]))
    vae.save_pretrained(paths["vae"])
    return paths


def _perturb_zero_layers(model: torch.nn.Module) -> None:
    """Fresh temporal modules are zero-initialised (identity); give them small weights so they do real work."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.abs().max() == 0 and name.endswith("weight"):
                param.normal_(0, 0.02)
