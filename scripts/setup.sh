#!/usr/bin/env bash
# Create .venv with nbkit and its test tools; idempotent, so every README command can start with it.
# torch is pinned to 2.13.0, inside Unsloth's bounds (< 2.15); on CPU-only machines here that is a CPU build.
# On a CUDA machine add Unsloth afterwards:  .venv/bin/pip install -e ".[gpu]"
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
if ! .venv/bin/python -c "import nbkit, torch, trl, papermill, pytest, playwright" 2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[test]"
fi
