"""StableSyncNet (SPEC 8): parity with the published implementation, published key names, checkpoint loading."""

from __future__ import annotations

import pytest
import torch
import yaml

from conftest import DATA, GOLDEN, golden, golden_config, key_list
from latentsync.checkpoint import save_safetensors
from latentsync.config import model_section
from latentsync.errors import CheckpointError, InputError
from latentsync.models.syncnet import StableSyncNet, load_syncnet

FULL_CONFIG = DATA.parent.parent / "latentsync" / "configs" / "syncnet" / "syncnet_16_pixel_attn.yaml"


def small_inputs(batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 48, 128, 256, generator=generator) * 2 - 1
    mel = torch.rand(batch, 1, 80, 52, generator=generator) * 8 - 4
    return images, mel


def test_matches_golden():
    model = load_syncnet(golden_config("syncnet_config"), GOLDEN / "syncnet_weights.safetensors")
    io = golden("syncnet_io")
    with torch.no_grad():
        vision, audio = model(io["images_uint8"].float() / 127.5 - 1, io["mel"])
    vision_error = (vision - io["vision_embeds"]).abs().max().item()
    audio_error = (audio - io["audio_embeds"]).abs().max().item()
    print(f"syncnet max abs error: vision {vision_error:.3g}, audio {audio_error:.3g}")
    assert vision_error < 1e-4 and audio_error < 1e-4
    torch.testing.assert_close(vision.norm(dim=1), torch.ones(2))


def test_full_size_matches_published_keys():
    with torch.device("meta"):
        model = StableSyncNet(**model_section(FULL_CONFIG))
        vision, audio = model(torch.empty(1, 48, 128, 256), torch.empty(1, 1, 80, 52))
    built = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert built == key_list(DATA / "reference" / "stable_syncnet_keys.txt")
    assert vision.shape == audio.shape == (1, 2048)  # both encoders end on a 1 x 1 map


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip(tmp_path, suffix):
    config = golden_config("syncnet_config")
    torch.manual_seed(1)
    original = load_syncnet(config)  # random weights
    path = tmp_path / f"syncnet{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": original.state_dict()}, path)
    else:
        save_safetensors(original.state_dict(), path)
    config_path = tmp_path / "syncnet.yaml"
    config_path.write_text(yaml.safe_dump({"model": config}))
    loaded = load_syncnet(config_path, path)
    for key, value in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    images, mel = small_inputs()
    with torch.no_grad():
        for a, b in zip(original(images, mel), loaded(images, mel)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # equal weights; CPU kernels may vary with alignment


def test_wrong_checkpoint_or_config():
    config = golden_config("syncnet_config")
    state = load_syncnet(config).state_dict()
    del state["visual_encoder.norm_out.bias"]
    with pytest.raises(CheckpointError, match="visual_encoder.norm_out.bias"):
        load_syncnet(config, state)
    with pytest.raises(InputError):
        load_syncnet({"audio_encoder": config["audio_encoder"]})
    with pytest.raises(InputError, match="layers"):
        load_syncnet({**config, "audio_encoder": {**config["audio_encoder"], "layers": 2}})


def test_gradient_checkpointing_gives_the_same_gradients():
    # A small encoder pair (with an attention block) keeps this cheap; the mechanism is the same at full size.
    encoder = {"block_out_channels": [32, 64, 64], "downsample_factors": [2, 2, 1], "attn_blocks": [0, 1, 0]}
    model = load_syncnet({"audio_encoder": {**encoder, "in_channels": 1}, "visual_encoder": {**encoder, "in_channels": 48}})
    model.train()
    generator = torch.Generator().manual_seed(0)
    images, mel = torch.randn(2, 48, 16, 16, generator=generator), torch.randn(2, 1, 16, 16, generator=generator)

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        vision, audio = model(images, mel)
        (vision * audio).sum().backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    plain = gradients()
    model.enable_gradient_checkpointing()
    checkpointed = gradients()
    model.disable_gradient_checkpointing()
    for key, grad in plain.items():
        torch.testing.assert_close(checkpointed[key], grad, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_cuda_half_precision_is_close_to_golden():
    model = load_syncnet(golden_config("syncnet_config"), GOLDEN / "syncnet_weights.safetensors", device="cuda", dtype=torch.float16)
    io = golden("syncnet_io")
    with torch.no_grad():
        vision, audio = model((io["images_uint8"].cuda() / 127.5 - 1).half(), io["mel"].cuda().half())
    errors = [(vision.float().cpu() - io["vision_embeds"]).abs().max().item(), (audio.float().cpu() - io["audio_embeds"]).abs().max().item()]
    print(f"syncnet fp16 on CUDA max abs error: vision {errors[0]:.3g}, audio {errors[1]:.3g}")
    assert max(errors) < 2e-2
