"""The LatentSync U-Net: parity with the published implementation, checkpoint layout, formats and training hooks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from conftest import DATA, GOLDEN, golden, golden_config, key_list
from latentsync.checkpoint import save_safetensors
from latentsync.config import model_section
from latentsync.errors import CheckpointError, InputError
from latentsync.models.motion_module import MotionModule, sinusoidal_table
from latentsync.models.unet import LatentSyncUNet, UNetConfig, load_unet

CONFIGS = Path(__file__).parents[1] / "latentsync" / "configs" / "unet"
GOLDEN_WEIGHTS = GOLDEN / "unet_weights.safetensors"


def reference_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of the published `latentsync_unet.pt`."""
    return dict(key_list(DATA / "reference" / "latentsync_unet_keys.txt"))


def meta_shapes(config: str | dict) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a model built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = LatentSyncUNet(UNetConfig.from_dict(model_section(config)))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def small_inputs(frames: int = 4, size: tuple[int, int] = (16, 16), batch: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 13, frames, *size, generator=g)
    audio = torch.randn(batch, frames, 50, 384, generator=g)
    return sample, audio


@pytest.fixture(scope="module")
def golden_unet() -> LatentSyncUNet:
    return load_unet(golden_config("unet_config"), GOLDEN_WEIGHTS)


def test_matches_golden(golden_unet):
    io = golden("unet_io")
    with torch.no_grad():
        out = golden_unet(io["sample"], io["timestep"], io["audio_embeds"])
    assert out.shape == io["output"].shape == (2, 4, 8, 16, 16) and out.dtype == torch.float32
    error = (out - io["output"]).abs().max().item()
    print(f"U-Net golden max abs error: {error:.3g}")
    assert error <= 1e-4
    # Batch 0 has all-zero audio tokens: the audio must change the prediction.
    assert (out[0] - out[1]).abs().max() > 1e-2


def test_half_precision_stays_close_to_golden():
    io = golden("unet_io")
    model = load_unet(golden_config("unet_config"), GOLDEN_WEIGHTS, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        out = model(io["sample"].bfloat16(), io["timestep"], io["audio_embeds"])
    assert out.dtype == torch.bfloat16
    error = (out.float() - io["output"]).abs()
    assert error.max() < 0.15 and error.mean() < 0.02  # bfloat16 keeps about 3 significant digits


def test_attention_runs_through_sdpa(golden_unet):
    processors = {type(m.processor) for m in golden_unet.modules() if isinstance(m, Attention)}
    assert processors == {AttnProcessor2_0}  # torch.nn.functional.scaled_dot_product_attention


def test_timestep_forms_agree(golden_unet):
    sample, audio = small_inputs(frames=2, size=(8, 8), batch=2)
    with torch.no_grad():
        outs = [golden_unet(sample, t, audio) for t in (501, torch.tensor(501), torch.tensor([501, 501]))]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    torch.testing.assert_close(outs[0], outs[2], rtol=0, atol=0)


def test_timestep_changes_the_prediction():
    # In the golden model each GroupNorm group holds one channel, which cancels the resnets' per-channel time
    # offset, so the parity vectors cannot see the time embedding; two channels per group can.
    model = load_unet(golden_config("unet_config") | {"block_out_channels": [64, 64, 64, 64]})
    sample, audio = small_inputs(frames=2, size=(8, 8))
    with torch.no_grad():
        assert (model(sample, 20, audio) - model(sample, 900, audio)).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["stage2", "stage2_512"])
def test_full_size_structure_matches_published_checkpoint(name):
    assert meta_shapes(CONFIGS / f"{name}.yaml") == reference_shapes()


def test_stage1_and_efficient_structures():
    reference = reference_shapes()
    stage1 = meta_shapes(CONFIGS / "stage1.yaml")
    assert stage1 == {k: v for k, v in reference.items() if "motion_modules." not in k}
    efficient = meta_shapes(CONFIGS / "stage2_efficient.yaml")  # motion modules in the decoder only
    assert efficient == {k: v for k, v in reference.items() if not k.startswith("down_blocks.") or "motion" not in k}


def test_full_size_parameter_count():
    with torch.device("meta"):
        model = LatentSyncUNet(UNetConfig.from_dict(model_section(CONFIGS / "stage2.yaml")))
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 3) == 1.267  # SPEC 1


@pytest.mark.parametrize(
    "change, present, absent",
    [
        ({"use_motion_module": False}, [], ["motion_modules"]),
        ({"add_audio_layer": False}, ["motion_modules"], ["attn2", "transformer_blocks.0.norm2"]),
        (
            {"motion_module_decoder_only": True},
            ["up_blocks.0.motion_modules", "up_blocks.3.motion_modules"],
            ["down_blocks.0.motion_modules", "down_blocks.3.motion_modules"],
        ),
        ({"motion_module_mid_block": True}, ["mid_block.motion_modules.0"], []),
    ],
)
def test_config_variants(change, present, absent):
    config = golden_config("unet_config") | change
    model = load_unet(config)
    names = list(model.state_dict())
    assert all(any(p in n for n in names) for p in present)
    assert not any(a in n for a in absent for n in names)
    sample, audio = small_inputs(frames=2, size=(8, 8))
    audio = audio if model.config.add_audio_layer else None
    with torch.no_grad():
        assert model(sample, 10, audio).shape == (1, 4, 2, 8, 8)


def test_odd_latent_size_keeps_shape(golden_unet):
    sample, audio = small_inputs(frames=2, size=(12, 20))  # 12 -> 6 -> 3 -> 2: upsampling must meet 3 again
    with torch.no_grad():
        assert golden_unet(sample, 999, audio).shape == (1, 4, 2, 12, 20)


def test_checkpoint_formats_round_trip(golden_unet, tmp_path):
    state = golden_unet.state_dict()
    wrapped, bare, safe = tmp_path / "wrapped.pt", tmp_path / "bare.pt", tmp_path / "unet.safetensors"
    torch.save({"state_dict": state, "global_step": 3}, wrapped)
    torch.save(state, bare)
    save_safetensors(state, safe)
    sample, audio = small_inputs()
    with torch.no_grad():
        expected = golden_unet(sample, 700, audio)
        for path in (wrapped, bare, safe):
            model = load_unet(golden_config("unet_config"), path)
            assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
            # Memory-mapped safetensors weights are not 64-byte aligned, which changes the CPU kernels' rounding.
            torch.testing.assert_close(model(sample, 700, audio), expected, rtol=0, atol=1e-5)


def test_mismatched_checkpoint_names_the_keys(golden_unet, tmp_path):
    state = dict(golden_unet.state_dict())
    del state["conv_in.bias"]
    state["extra_layer.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError) as info:
        load_unet(golden_config("unet_config"), path)
    assert "conv_in.bias" in str(info.value) and "extra_layer.weight" in str(info.value)


def test_gradient_checkpointing_gives_same_gradients():
    model = load_unet(golden_config("unet_config"), GOLDEN_WEIGHTS).train()
    sample, audio = small_inputs(frames=4, size=(8, 8))
    weights = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(1))

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        model.zero_grad()
        saved = 0

        def count(t):
            nonlocal saved
            saved += 1
            return t

        with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
            out = model(sample, 400, audio)
        (out * weights).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, saved

    plain_out, plain_grads, plain_saved = run()
    model.enable_gradient_checkpointing()
    ckpt_out, ckpt_grads, ckpt_saved = run()
    model.disable_gradient_checkpointing()

    assert ckpt_saved < plain_saved / 5  # activations really are dropped, not kept
    torch.testing.assert_close(ckpt_out, plain_out, rtol=0, atol=0)
    assert plain_grads.keys() == ckpt_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, msg=name)
    assert any(g.abs().max() > 0 for n, g in plain_grads.items() if "motion_modules" in n)


def test_random_init_temporal_modules_are_identity_with_standard_tables():
    model = load_unet(golden_config("unet_config"))
    motion = [m for m in model.modules() if isinstance(m, MotionModule)]
    assert len(motion) == 4 * 2 + 4 * 3  # every layer of the down and up blocks, none in the mid block
    x = torch.randn(2 * 6, 32, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(motion[0](x, num_frames=6), x, rtol=0, atol=0)

    standard = sinusoidal_table(24, 32)
    stored = golden("unet_weights")
    tables = {k: v for k, v in model.state_dict().items() if k.endswith("pos_encoder.pe")}
    assert len(tables) == len(motion) * 2
    for name, table in tables.items():
        assert torch.equal(table, standard), name
        torch.testing.assert_close(stored[name], standard, rtol=0, atol=1e-6)  # the published tables agree
    zeroed = [v for k, v in model.state_dict().items() if "temporal_transformer.proj_out" in k]
    assert zeroed and all((v == 0).all() for v in zeroed)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"motion_module_type": "Conv"}, "motion_module_type"),
        ({"motion_module_kwargs": {"attention_block_types": ["Temporal_Self", "Temporal_Cross"]}}, "Temporal_Cross"),
        ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift"),
        ({"attention_head_dim": [5, 10, 20, 20]}, "attention_head_dim"),
        ({"up_block_types": ["UpBlock3D"]}, "differ in length"),
    ],
)
def test_unsupported_configs_are_refused(change, message):
    with pytest.raises(InputError, match=message):
        load_unet(golden_config("unet_config") | change)


def test_yaml_scientific_notation_is_read_as_a_number():
    config = UNetConfig.from_dict(model_section(CONFIGS / "stage2.yaml"))
    assert config.norm_eps == 1e-5 and isinstance(config.norm_eps, float)


def test_bad_inputs_are_refused_before_work(golden_unet):
    sample, audio = small_inputs(frames=4)
    with pytest.raises(InputError, match="at most 24"):
        golden_unet(torch.zeros(1, 13, 25, 8, 8), 1, torch.zeros(1, 25, 50, 384))
    with pytest.raises(InputError, match="13"):
        golden_unet(sample[:, :9], 1, audio)
    with pytest.raises(InputError, match="audio_embeds"):
        golden_unet(sample, 1, audio[:, :3])
    with pytest.raises(InputError, match="audio_embeds"):
        golden_unet(sample, 1, None)
    with pytest.raises(InputError, match="width"):
        golden_unet(sample, 1, audio[..., :100])
    with pytest.raises(InputError, match="timesteps"):
        golden_unet(sample, torch.tensor([1, 2, 3]), audio)
