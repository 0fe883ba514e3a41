"""Models: the audio-conditioned U-Net, StableSyncNet, and loaders for the diffusers VAE and scheduler."""

from .scheduler import load_scheduler
from .syncnet import StableSyncNet, load_syncnet
from .unet import LatentSyncUNet, load_unet
from .vae import SCALING_FACTOR, VAE_ID, decode_latents, encode_latents, load_vae

__all__ = [
    "LatentSyncUNet",
    "StableSyncNet",
    "load_unet",
    "load_syncnet",
    "load_vae",
    "load_scheduler",
    "encode_latents",
    "decode_latents",
    "SCALING_FACTOR",
    "VAE_ID",
]
