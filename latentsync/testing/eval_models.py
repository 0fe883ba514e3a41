"""Random-weight evaluation and data-filter models in the published file formats, for end-to-end tests.

Each file is what `torch.save` writes for a name -> tensor dict, like the published `syncnet_v2.model`,
`sfd_face.pth` and `koniq_pretrained.pkl`, with the published names and shapes (these architectures have no
size options, so the models are full size). To keep the files small, tensors with more than `compact_above`
elements are saved as overlapping strided views of a small storage (output filter f starts 7 * f elements in),
which `torch.load` gives back as views: loaders must make them contiguous, as for the parity files. SyncNet's
BatchNorm statistics are measured on one batch of typical input (0-255 BGR frames, int16-scale MFCCs), so its
embeddings stay of moderate size.
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
_FILTER_STEP = 7  # elements between the starts of consecutive output filters in a compact tensor


def _compact(value: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A tensor of `value`'s shape and spread whose output filters overlap in one small storage."""
    per_filter = value[0].numel()
    storage = torch.randn((value.shape[0] - 1) * _FILTER_STEP + per_filter, generator=gen) * value.float().std()
    inner = torch.empty(value.shape[1:]).stride() if value.ndim > 1 else ()
    return torch.as_strided(storage, value.shape, (_FILTER_STEP, *inner))


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


def _save(model: nn.Module, path: Path, compact_above: int, gen: torch.Generator, calibrate=None,
          skip_counters: bool = False) -> Path:
    """Compact the large tensors (the model takes the same values), calibrate, and `torch.save` the state dict."""
    compact = {}
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.is_floating_point() and value.numel() > compact_above:
                compact[name] = _compact(value, gen)
                value.copy_(compact[name])
    if calibrate is not None:
        _calibrate_batchnorm(model, calibrate)
    state = {}
    for name, value in model.state_dict().items():
        if skip_counters and name.endswith("num_batches_tracked"):
            continue  # the published syncnet_v2.model has no BatchNorm counters
        state[name] = compact.get(name, value.detach().clone())
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def write_random_syncnet_v2(path: str | Path, seed: int = 0, compact_above: int = 65536) -> Path:
    """A random `syncnet_v2.model` (88 tensors, no BatchNorm counters)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SyncNetV2()

    def feed(net: SyncNetV2) -> None:
        net.forward_lip(torch.rand(2, 3, 5, 224, 224, generator=gen) * 255)
        net.forward_aud(torch.randn(16, 1, 13, 20, generator=gen) * 10)

    return _save(model, Path(path), compact_above, gen, feed, skip_counters=True)


def write_random_s3fd(path: str | Path, seed: int = 0, compact_above: int = 4096) -> Path:
    """A random `sfd_face.pth` (65 tensors); the L2Norm scales start at the published 10, 8, 5."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = S3FDNet()
    with torch.no_grad():
        for norm, scale in ((model.L2Norm3_3, 10.0), (model.L2Norm4_3, 8.0), (model.L2Norm5_3, 5.0)):
            norm.weight.fill_(scale)
    return _save(model, Path(path), compact_above, gen)


def write_random_hyperiqa(path: str | Path, seed: int = 0, compact_above: int = 4096) -> Path:
    """A random `koniq_pretrained.pkl` (355 tensors, BatchNorm counters included as published). The BatchNorm
    statistics keep their defaults (mean 0, variance 1): the residual stages keep activations finite, and
    skipping a ResNet-50 pass keeps this quick."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    return _save(HyperNet(), Path(path), compact_above, gen)


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
