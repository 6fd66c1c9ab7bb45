#!/usr/bin/env bash
# Run nbkit's GPU scripts on a machine without network: install the carried wheels, then run a stage.
# usage: bash bench/device.sh STAGE...   (stages: e2e mem1b mem1b-hf mem8b notebooks throughput)
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export NBKIT_DISPLAY=text OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
cd bench
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  case $stage in
    e2e) python3 gpu_e2e.py --arch 1b --quant 4bit,16bit,fp8 --steps 30 ;;
    mem1b) python3 memory_accuracy.py --arch 1b --quant 4bit,16bit,fp8 --out memory_1b_unsloth.json ;;
    mem1b-rest) python3 memory_accuracy.py --arch 1b --quant 16bit,fp8 --shapes 512x8,2048x4,4096x2,4096x8 \
                --out memory_1b_unsloth_b.json ;;
    mem1b-hf) NBKIT_BACKEND=transformers python3 memory_accuracy.py --arch 1b --quant 4bit,16bit \
                --shapes 512x8,2048x4,4096x2 --backend transformers --out memory_1b_hf.json ;;
    mem8b) python3 memory_accuracy.py --arch 8b --quant 4bit,16bit,fp8 --shapes 512x8,2048x4,4096x8 \
                --out memory_8b_unsloth.json ;;
    # one process per (arch, quantization): a second model loaded in one process keeps part of the first
    mem-clean)
      timeout 200 python3 memory_accuracy.py --arch 8b --quant 16bit --shapes 512x8,2048x4,4096x8 --out mem_8b_16bit.json
      NBKIT_BACKEND=transformers timeout 100 python3 memory_accuracy.py --arch 1b --quant 16bit --backend transformers \
        --shapes 512x8,2048x4,4096x2 --out mem_1b_16bit_hf.json
      NBKIT_BACKEND=transformers timeout 110 python3 memory_accuracy.py --arch 8b --quant 4bit --backend transformers \
        --shapes 512x8,2048x4 --out mem_8b_4bit_hf.json
      timeout 150 python3 memory_accuracy.py --arch 1b --quant fp8 --shapes 512x8,2048x4,4096x8 --out mem_1b_fp8.json
      timeout 100 python3 memory_accuracy.py --arch 1b --quant 4bit --shapes 512x1,2048x4,4096x8 --out mem_1b_4bit.json ;;
    # each tier notebook, headless, on a random-weight model of its default architecture, under the tier's cap
    notebooks)
      python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site ../.whl-nb/*.whl || exit 1
      python3 -c "from common import random_model; random_model('1b'); random_model('8b')"
      cd ..
      nb() { name=$1; shift; timeout "$NB_TIMEOUT" python3 -m nbkit notebook "notebooks/$name.ipynb" -o "$OUT/nb_$name.ipynb" \
               -p smoke False -p max_steps 20 -p save_gguf False "$@"; echo "[notebook $name] rc=$?"; }
      NB_TIMEOUT=150 nb 8gb -p model /tmp/nbkit-models/1b -p emulate_tier True
      NB_TIMEOUT=150 nb 16gb -p model /tmp/nbkit-models/8b -p emulate_tier True -p save_merged False
      NB_TIMEOUT=170 nb h100 -p model /tmp/nbkit-models/8b
      NB_TIMEOUT=150 nb 24gb -p model /tmp/nbkit-models/8b -p emulate_tier True -p save_merged False
      cd bench ;;
    throughput) timeout 230 python3 throughput.py --arch 1b --quant 16bit --seq 2048 --batch 4 --steps 8 ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
  echo "=== $stage rc=$? $(date +%T)"
done
