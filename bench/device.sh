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
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
  echo "=== $stage rc=$? $(date +%T)"
done
