"""VideoMAE-v2 ViT: checkpoint round trip, the published ViT-g key layout, and the feature output."""

from __future__ import annotations

import pytest
import torch

from latentsync.errors import CheckpointError, InputError
from latentsync.models import videomae
from latentsync.models.videomae import VideoMAE, VideoMAEConfig, load_videomae, sinusoid_table

TINY = VideoMAEConfig(
    image_size=28, patch_size=14, tubelet_size=2, num_frames=4, embed_dim=64, depth=2, num_heads=4, num_classes=5
)

# vit_g_hybrid_pt_1200e_ssv2_ft.pth: D = 1408, MLP hidden = 1408 * 48 / 11 = 6144, 40 blocks, 174 classes.
D, HIDDEN, DEPTH = 1408, 6144, 40
VIT_G_BLOCK_SHAPES = {
    "norm1.weight": (D,), "norm1.bias": (D,),
    "attn.q_bias": (D,), "attn.v_bias": (D,),
    "attn.qkv.weight": (3 * D, D),
    "attn.proj.weight": (D, D), "attn.proj.bias": (D,),
    "norm2.weight": (D,), "norm2.bias": (D,),
    "mlp.fc1.weight": (HIDDEN, D), "mlp.fc1.bias": (HIDDEN,),
    "mlp.fc2.weight": (D, HIDDEN), "mlp.fc2.bias": (D,),
}  # fmt: skip
VIT_G_OTHER_SHAPES = {
    "patch_embed.proj.weight": (D, 3, 2, 14, 14),
    "patch_embed.proj.bias": (D,),
    "fc_norm.weight": (D,),
    "fc_norm.bias": (D,),
    "head.weight": (174, D),
    "head.bias": (174,),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _clips(batch: int = 2, config: VideoMAEConfig = TINY) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, config.num_frames, config.image_size, config.image_size, generator=g)


@pytest.mark.parametrize("wrapper", [None, "model", "module", "state_dict"])
def test_round_trip_in_release_layouts(tmp_path, wrapper):
    torch.manual_seed(0)
    model = VideoMAE(TINY).eval()
    state = model.state_dict()
    path = tmp_path / "videomae.pth"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 3}, path)
    loaded = load_videomae(path, TINY)
    assert not any(p.requires_grad for p in loaded.parameters())
    clips = _clips()
    torch.testing.assert_close(loaded(clips), model(clips), rtol=0, atol=0)


def test_mismatched_checkpoint_is_reported(tmp_path):
    state = VideoMAE(TINY).state_dict()
    del state["blocks.1.attn.q_bias"]
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="blocks.1.attn.q_bias"):
        load_videomae(tmp_path / "bad.pth", TINY)


def test_feature_shape_gradients_and_checkpointing():
    torch.manual_seed(0)
    model = VideoMAE(TINY).eval().requires_grad_(False)
    clips = _clips().requires_grad_(True)
    features = model(clips)
    assert features.shape == (2, TINY.embed_dim)
    features.square().sum().backward()
    assert clips.grad is not None and clips.grad.abs().sum() > 0
    model.enable_gradient_checkpointing()
    torch.testing.assert_close(model(_clips()), features.detach())
    with pytest.raises(InputError, match="VideoMAE input"):
        model(_clips()[:, :, :2])


def test_position_table_is_the_fixed_sin_cos_table():
    table = sinusoid_table(5, 8)
    j = 2  # channels 2 (sin) and 3 (cos) share the frequency 10000 ** (-2 / 8)
    freq = 10000 ** (-j / 8)
    torch.testing.assert_close(table[3, j], torch.tensor(3 * freq).sin())
    torch.testing.assert_close(table[3, j + 1], torch.tensor(3 * freq).cos())
    assert torch.equal(table[0, 1::2], torch.ones(4))


def test_full_vit_g_builds_with_the_published_keys():
    with torch.device("meta"):
        model = VideoMAE()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = dict(VIT_G_OTHER_SHAPES)
    for i in range(DEPTH):
        expected.update({f"blocks.{i}.{k}": v for k, v in VIT_G_BLOCK_SHAPES.items()})
    assert shapes == expected
    assert len(shapes) == 526
    assert model.config.grid == (8, 16, 16)  # 2,048 tokens per 16-frame clip
    assert round(sum(v.numel() for v in model.state_dict().values()) / 1e9, 2) == 1.01  # ViT-g: 1.01 B parameters


def test_weights_are_adopted_in_the_requested_dtype(tmp_path, monkeypatch):
    """The tensors are cast as they are adopted: a bf16 model never exists as a float32 copy first."""
    torch.save(VideoMAE(TINY).state_dict(), tmp_path / "videomae.pth")
    real, dtypes = videomae.build_with_weights, []

    def spy(factory, state, what, dtype=torch.float32):
        dtypes.append(dtype)
        return real(factory, state, what, dtype)

    monkeypatch.setattr(videomae, "build_with_weights", spy)
    loaded = load_videomae(tmp_path / "videomae.pth", TINY, dtype=torch.bfloat16)
    assert dtypes == [torch.bfloat16] and all(p.dtype == torch.bfloat16 for p in loaded.parameters())
