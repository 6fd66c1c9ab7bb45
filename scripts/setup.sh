#!/usr/bin/env bash
# Install nbkit and what it needs; idempotent, so every README command can start with it. The one install path:
#  - default: create .venv with nbkit and its test tools from the package index. torch is pinned to 2.13.0,
#    inside Unsloth's bounds (< 2.15); on CPU-only machines here that is a CPU build. On a CUDA machine add
#    Unsloth afterwards:  .venv/bin/pip install -e ".[gpu]"
#  - NBKIT_WHEELS="DIR..." (a GPU machine without network, bench/device.sh): the image's Python already has torch,
#    transformers, peft and accelerate; install the carried wheels from DIR... into NBKIT_SITE (default
#    /tmp/site), once, and put that folder and this checkout on PYTHONPATH (printed as an export line).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${NBKIT_WHEELS:-}" ]; then
  site=${NBKIT_SITE:-/tmp/site}
  for dir in $NBKIT_WHEELS; do  # each folder once per machine: several device.sh runs share it, and a later
    marker="$site/.nbkit-installed-$(basename "$dir")"  # run may carry a folder an earlier one did not
    if [ ! -f "$marker" ]; then
      python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$dir"/*.whl
      touch "$marker"
    fi
  done
  echo "export PYTHONPATH=$site:$PWD"
  exit 0
fi
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
# llama-cpp-python (a test tool: it loads exported GGUF files back) is built from source, portable: ggml's AVX2
# baseline, not -march=native. A native build on an AMX CPU with GCC 12 crashes (SIGSEGV) on every batch of two or
# more tokens of a q8_0/q4 file (docs/portability.md), and one build for every CPU of the kind means the GGUF tests
# compute the same everywhere. A native build left by an earlier setup is replaced.
portable_llama="import llama_cpp; info = llama_cpp.llama_print_system_info(); assert b'AMX' not in info and b'AVX512' not in info"
if ! .venv/bin/python -c "import nbkit, torch, trl, papermill, pytest, playwright, llama_cpp, sentencepiece, notebook, anywidget, charset_normalizer; $portable_llama" \
    2>/dev/null; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  if ! .venv/bin/python -c "$portable_llama" 2>/dev/null; then
    # from source, without pip's wheel cache (it may hold a native build); with every core
    CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) .venv/bin/python -m pip install -q \
      --no-cache-dir --no-binary llama-cpp-python --force-reinstall --no-deps \
      "$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)"
  fi
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) .venv/bin/python -m pip install -q -e ".[test]"
fi
# JupyterLab / Notebook 7 of this environment save widget state with the notebook (a reopened notebook shows the
# widgets as they were); a setting already made there is kept
.venv/bin/python -c "from nbkit.ui.frontend import save_widget_state; save_widget_state()" >/dev/null
