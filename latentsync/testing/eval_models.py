"""Random-weight evaluation and data-filter models in the published file formats, for end-to-end tests.

Each file is what `torch.save` writes for a name -> tensor dict, like the published `syncnet_v2.model`,
`sfd_face.pth` and `koniq_pretrained.pkl`, with the published names and shapes (these architectures have no
size options, so the models are full size). To keep the files small, tensors with more than `compact_above`
elements are saved as overlapping strided views of a small storage (output filter f starts 7 * f elements in),
which `torch.load` gives back as views: loaders must make them contiguous, as for the parity files. SyncNet's
BatchNorm statistics are measured on one batch of typical input (0-255 BGR frames, int16-scale MFCCs).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..evaluation.hyperiqa import HyperNet
from ..evaluation.s3fd import S3FDNet
from ..evaluation.syncnet_v2 import SyncNetV2
from ..fileio import atomic_path

# Where `latentsync.weights` looks for each component inside a checkpoint folder.
EVAL_WEIGHT_FILES = {
    "syncnet_v2": "auxiliary/syncnet_v2.model",
    "s3fd": "auxiliary/sfd_face.pth",
    "hyperiqa": "auxiliary/koniq_pretrained.pkl",
}
FACE_LOGIT_BIAS = 8.0
FACE_BIASED_HEADS = (3, 4, 5)
_FILTER_STEP = 7  # elements between the starts of consecutive output filters in a compact tensor


def _compact(shape: torch.Size, std: float, gen: torch.Generator) -> torch.Tensor:
    """A random tensor of `shape` whose output filters overlap in one small storage."""
    per_filter = shape[1:].numel()
    storage = torch.randn((shape[0] - 1) * _FILTER_STEP + per_filter, generator=gen) * std
    return torch.as_strided(storage, shape, (_FILTER_STEP, *torch.empty(shape[1:]).stride()))


def _random_state(model: nn.Module, gen: torch.Generator, compact_above: int, fill_model: bool) -> dict[str, torch.Tensor]:
    """Random values for every tensor of a model built on the meta device (no default initialisation, which is
    slow for these sizes): weights ~ N(0, 1 / (3 fan-in)) like PyTorch's default spread, biases small, BatchNorm
    as freshly built. Large tensors are compact views; `fill_model` also gives the model these values."""
    model.to_empty(device="cpu")
    owners = dict(model.named_modules())
    state = {}
    with torch.no_grad():
        for name, value in model.state_dict(keep_vars=True).items():
            owner, _, leaf = name.rpartition(".")
            if isinstance(owners[owner], nn.modules.batchnorm._BatchNorm):
                value.fill_(1.0 if leaf in ("weight", "running_var") else 0)
            elif value.ndim >= 2:
                std = (3 * value[0].numel()) ** -0.5
                if value.numel() > compact_above:
                    state[name] = _compact(value.shape, std, gen)
                    if fill_model:
                        value.copy_(state[name])
                    continue
                value.copy_(torch.randn(value.shape, generator=gen) * std)
            else:
                value.copy_(torch.randn(value.shape, generator=gen) * 0.02)
            state[name] = value.detach()
    return state


def _calibrate_batchnorm(model: nn.Module, run) -> None:
    """Set every BatchNorm's running statistics to those of one batch (`run(model)` feeds it)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    model.train()
    with torch.no_grad():
        run(model)
    for norm in norms:
        norm.momentum = 0.1
    model.eval()


def _build(factory) -> nn.Module:
    with torch.device("meta"):
        return factory()


def _write(state: dict[str, torch.Tensor], path: Path) -> Path:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def write_random_syncnet_v2(path: str | Path, seed: int = 0, compact_above: int = 65536) -> Path:
    """A random `syncnet_v2.model` (88 tensors, no BatchNorm counters)."""
    gen = torch.Generator().manual_seed(seed)
    model = _build(SyncNetV2)
    state = _random_state(model, gen, compact_above, fill_model=True)

    def feed(net: SyncNetV2) -> None:
        net.forward_lip(torch.rand(2, 3, 5, 224, 224, generator=gen) * 255)
        net.forward_aud(torch.randn(16, 1, 13, 20, generator=gen) * 10)

    _calibrate_batchnorm(model, feed)
    stats = {k: v.detach().clone() for k, v in model.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    return _write({k: stats.get(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")}, Path(path))


def write_random_s3fd(path: str | Path, seed: int = 0, compact_above: int = 4096) -> Path:
    """A random `sfd_face.pth` (65 tensors); the L2Norm scales are the published initial 10, 8, 5.

    The face logits of the coarse heads (anchors 128 px and up) are biased up by `FACE_LOGIT_BIAS`, so that the
    detector reports a few large (meaningless but stable) faces above the published 0.9 threshold and end-to-end
    runs exercise tracking, crops and SyncNet, as the parity file's random weights do."""
    gen = torch.Generator().manual_seed(seed)
    state = _random_state(_build(S3FDNet), gen, compact_above, fill_model=False)
    for name, scale in (("L2Norm3_3", 10.0), ("L2Norm4_3", 8.0), ("L2Norm5_3", 5.0)):
        state[f"{name}.weight"].fill_(scale)
    for head in FACE_BIASED_HEADS:
        state[f"conf.{head}.bias"][-1] += FACE_LOGIT_BIAS  # the last channel of each head is the face logit
    return _write(state, Path(path))


def write_random_hyperiqa(path: str | Path, seed: int = 0, compact_above: int = 4096) -> Path:
    """A random `koniq_pretrained.pkl` (355 tensors, BatchNorm counters included as published). BatchNorm keeps
    its fresh statistics (mean 0, variance 1): the residual stages keep activations finite."""
    gen = torch.Generator().manual_seed(seed)
    return _write(_random_state(_build(HyperNet), gen, compact_above, fill_model=False), Path(path))


def write_random_eval_models(
    folder: str | Path, seed: int = 0, components: tuple[str, ...] = tuple(EVAL_WEIGHT_FILES)
) -> dict[str, Path]:
    """Write the chosen components ("syncnet_v2", "s3fd", "hyperiqa"; all by default) under `folder` where
    `latentsync.weights` finds them (`auxiliary/...`); return their paths by component name."""
    unknown = set(components) - set(EVAL_WEIGHT_FILES)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; choose from {list(EVAL_WEIGHT_FILES)}")
    folder = Path(folder)
    writers = {"syncnet_v2": write_random_syncnet_v2, "s3fd": write_random_s3fd, "hyperiqa": write_random_hyperiqa}
    return {name: writers[name](folder / EVAL_WEIGHT_FILES[name], seed) for name in components}
