"""Training: the SyncNet trainer (`syncnet`) and the U-Net trainer (`unet`), each a setup, a step function and a
loop; their losses (`losses`); and what both need, one job per module: the config and its overrides (`settings`),
processes (`distributed`), mixed precision (`precision`), seeds and the resumable data order (`sampling`),
checkpoints (`checkpoints`) and the metrics log (`metrics`)."""
