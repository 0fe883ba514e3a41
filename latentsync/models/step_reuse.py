"""Step reuse (the DeepCache idea) for the LatentSync U-Net: the deep features change little from one denoising
step to the next, so the deep branch runs only every N-th step and the steps in between reuse its last output,
running only the shallow branch (the outermost resolution level: its down layers, motion modules included, and
its up block) at their own latents and timestep.

    denoiser = StepReuse(unet, every=3)      # one per chunk, or reset() between chunks
    for i, t in enumerate(scheduler.timesteps):
        noise = denoiser(model_input, t, audio, i)
"""

from __future__ import annotations

import torch

from ..errors import InputError
from .unet import LatentSyncUNet


class StepReuse:
    """Noise predictions for the steps of one chunk, the deep branch evaluated at every `every`-th step only.

    `every=1` is exact sampling (the plain forward pass at every step, nothing cached). `levels` is how many
    outer resolution levels are recomputed at reused steps (more: closer to exact, less saved).
    `deep_evaluations` counts the deep-branch runs since construction.
    """

    def __init__(self, unet: LatentSyncUNet, every: int = 1, levels: int = 1):
        if int(every) != every or every < 1:
            raise InputError(f"step reuse must be a whole number of steps >= 1, got {every}", "1 means exact sampling")
        if not 1 <= levels <= unet.shallow_levels:
            raise InputError(f"step reuse levels must be between 1 and {unet.shallow_levels}, got {levels}")
        self.unet = unet
        self.every = int(every)
        self.levels = levels
        self.deep_evaluations = 0
        self._deep: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the cached deep features (a new chunk starts)."""
        self._deep = None

    def __call__(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, audio_embeds: torch.Tensor | None, step_index: int
    ) -> torch.Tensor:
        """The predicted noise at step `step_index` (0-based) of the current chunk."""
        if self.every == 1:
            self.deep_evaluations += 1
            return self.unet(sample, timestep, audio_embeds)
        if step_index % self.every == 0 or self._deep is None:
            noise, self._deep = self.unet.forward_split(sample, timestep, audio_embeds, levels=self.levels)
            self.deep_evaluations += 1
            return noise
        noise, _ = self.unet.forward_split(sample, timestep, audio_embeds, levels=self.levels, deep=self._deep)
        return noise
