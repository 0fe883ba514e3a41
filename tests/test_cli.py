"""The `latentsync` command itself: installed entry point, help, one-line errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from latentsync.cli import main

COMMANDS = ["infer", "demo", "track", "prepare", "train-syncnet", "train-unet", "download", "convert"]


def test_installed_entry_point_shows_every_command():
    exe = shutil.which("latentsync") or str(Path(sys.executable).with_name("latentsync"))
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


def test_module_entry_point_for_torchrun():
    result = subprocess.run([sys.executable, "-m", "latentsync.cli", "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("latentsync ")


def test_user_errors_are_one_line_and_a_hint(tmp_path, capsys):
    code = main(["convert", str(tmp_path / "missing.pt"), str(tmp_path / "out.safetensors")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[0] == f"latentsync: error: checkpoint not found: {tmp_path / 'missing.pt'}"
    assert err[1].startswith("  hint: ") and len(err) == 2
