"""Checkpoint files in the published formats: reading, key reports, conversion to safetensors."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors import safe_open

from latentsync.checkpoint import (
    check_state_dict,
    convert_checkpoint,
    extract_state_dict,
    load_state_dict,
    read_checkpoint,
)
from latentsync.cli import main
from latentsync.errors import CheckpointError


def _state():
    torch.manual_seed(0)
    return {"a.weight": torch.randn(4, 3), "a.bias": torch.randn(4), "pe": torch.randn(1, 5, 4), "count": torch.tensor(7)}


def test_wrapped_bare_and_safetensors_give_the_same_tensors(tmp_path):
    state = _state()
    torch.save({"state_dict": state, "global_step": 12}, tmp_path / "wrapped.pt")
    torch.save(state, tmp_path / "bare.pt")
    convert_checkpoint(tmp_path / "wrapped.pt", tmp_path / "converted.safetensors")
    for name in ("wrapped.pt", "bare.pt", "converted.safetensors"):
        loaded = load_state_dict(tmp_path / name)
        assert loaded.keys() == state.keys()
        for k in state:
            assert torch.equal(loaded[k], state[k]), (name, k)


def test_convert_fp16_via_cli_keeps_step_and_halves_floats(tmp_path, capsys):
    state = _state()
    torch.save({"state_dict": state, "global_step": 12}, tmp_path / "unet.pt")
    assert main(["convert", str(tmp_path / "unet.pt"), str(tmp_path / "unet.safetensors"), "--fp16"]) == 0
    assert "wrote" in capsys.readouterr().out
    with safe_open(str(tmp_path / "unet.safetensors"), "pt") as f:
        assert f.metadata()["global_step"] == "12"
        assert f.get_tensor("a.weight").dtype == torch.float16
        assert f.get_tensor("count").dtype == torch.int64  # integers are not cast
        assert torch.allclose(f.get_tensor("a.weight").float(), state["a.weight"], atol=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unet.pt", "unet.safetensors"]  # no temp files left


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickles_with_code_are_refused(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": _Evil()}, f)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "evil.pt")


def test_truncated_and_missing_files_give_clear_errors(tmp_path):
    torch.save({"state_dict": _state()}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_state_dict(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="holds no tensors"):
        torch.save({"global_step": 3}, tmp_path / "empty.pt")
        load_state_dict(tmp_path / "empty.pt")


def test_key_report_names_missing_unexpected_and_misshaped():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    state = dict(model.state_dict())
    del state["1.bias"]
    state["2.weight"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(5, 3)
    with pytest.raises(CheckpointError) as err:
        check_state_dict(model, state, "toy")
    text = str(err.value)
    assert "missing 1: 1.bias" in text and "unexpected 1: 2.weight" in text and "0.weight (5, 3) != (4, 3)" in text


def test_other_wrappers_are_opened_only_when_named():
    state = _state()
    assert extract_state_dict({"model_state_dict": state}).keys() == state.keys()
    assert extract_state_dict({"model": state, "epoch": 3}, wrappers=("model", "module")).keys() == state.keys()
    with pytest.raises(CheckpointError, match="holds no tensors"):
        extract_state_dict({"model": state})
