"""Training: infrastructure shared by the trainers (`common`), the SyncNet trainer (`syncnet`) and the U-Net
trainer (`unet`)."""
