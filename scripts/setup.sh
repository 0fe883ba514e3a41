#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install latentsync into it.
# TORCH_SPEC picks the PyTorch build (default: torch==2.13.0; e.g. TORCH_SPEC="torch==2.11.*" on a CUDA machine).
# EXTRAS picks optional parts (default: dev,all).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[${EXTRAS:-dev,all}]"
