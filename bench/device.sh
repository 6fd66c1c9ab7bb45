#!/usr/bin/env bash
# Run nbkit's GPU scripts on a machine without network: install the carried wheels, then run a stage.
# usage: bash bench/device.sh STAGE...   (stages: see the case below; each writes JSON under bench/results and $OUT)
set -uo pipefail
# the same install path as everywhere (scripts/setup.sh), in its offline mode: the carried wheels, once per machine
# (.whl-nb, the notebook stack, is only needed by the notebook stages: leave it out of a call's carry otherwise)
wheels=$(for d in .whl .whl-nb .whl-extra; do [ -d "$d" ] && printf '%s ' "$d"; done)
eval "$(NBKIT_WHEELS="$wheels" bash scripts/setup.sh)" || exit 1
export HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# NVLink multicast can take a shared host's GPUs out of service: off in every process started from here
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export NBKIT_DISPLAY=text OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nb() { name=$1; shift; timeout "$NB_TIMEOUT" python3 -m nbkit notebook "notebooks/$name.ipynb" -o "$OUT/nb_$name.ipynb" \
         -p smoke False -p max_steps 20 "$@"; echo "[notebook $name] rc=$?"; }
cd bench
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  case $stage in
    models) python3 -c "from common import random_model; random_model('1b'); random_model('8b')" ;;
    model1b) python3 -c "from common import random_model; random_model('1b')" ;;
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
      timeout 100 python3 memory_accuracy.py --arch 1b --quant 4bit --shapes 512x1,2048x4,4096x8 --out mem_1b_4bit.json ;;
    # FP8 peaks, one process per model; --shared-gpu: other stages may run beside it, so its speeds are not used
    # FP8's first step compiles for minutes (more with other jobs on the machine)
    fp8mem) timeout 560 python3 memory_accuracy.py --arch 1b,8b --quant fp8 --shapes 2048x4,4096x8 \
              --part-timeout 270 --shared-gpu --out mem_fp8.json ;;
    parity) timeout 400 python3 loss_parity.py --arch 1b --quant 16bit --steps 50 --batch 4 --seq 512 ;;
    parity4) timeout 420 python3 loss_parity.py --arch 1b --quant 4bit --steps 50 --batch 4 --seq 512 ;;
    tput8b) timeout 560 python3 throughput.py --arch 8b --quant 4bit --seq 2048 --batch 4 --steps 10 --part-timeout 200 ;;
    tput-rest)
      timeout 270 python3 throughput.py --arch 1b --quant 4bit --seq 2048 --batch 4 --steps 8 --part-timeout 110
      timeout 290 python3 throughput.py --arch 8b --quant 16bit --seq 2048 --batch 4 --steps 8 --part-timeout 120 ;;
    lbh100) timeout 330 python3 largest_batch.py --arch 8b --quant 16bit --tiers H100 --seq 2048 --steps 2 --max-up 1 ;;
    # first step and start-to-first-step, raw Unsloth vs nbkit, alternating, one process each
    # (three alternating repeats each; uniform rows, then real-length rows)
    first1b) timeout 520 python3 throughput.py --arch 1b --quant 4bit --seq 2048 --batch 4 --steps 8 \
               --variants raw,nbkit --repeats 3 --part-timeout 130 --tag _first_step ;;
    first1b-mixed) timeout 520 python3 throughput.py --arch 1b --quant 4bit --seq 2048 --batch 4 --steps 8 \
               --variants raw,nbkit --repeats 3 --lengths mixed --part-timeout 130 --tag _first_step_mixed ;;
    # the progress display's cost: nbkit with it vs without, 8B 4-bit, three alternating repeats
    display8b) python3 -c "from common import random_model; random_model('8b')"
               timeout 540 python3 throughput.py --arch 8b --quant 4bit --seq 2048 --batch 2 --steps 8 \
               --variants nbkit,nbkit-quiet --repeats 3 --part-timeout 160 --tag _display ;;
    # the notebook's live view (widgets, the loss curve redrawn every 2 s on its own thread) against no display
    display8b-live) python3 -c "from common import random_model; random_model('8b')"
               timeout 560 python3 throughput.py --arch 8b --quant 4bit --seq 2048 --batch 2 --steps 30 \
               --variants nbkit-live,nbkit-quiet --repeats 3 --part-timeout 170 --tag _display_live ;;
    # packing (#28): one epoch, nbkit (packing auto) vs raw Unsloth default vs raw Unsloth packed; 1B on GPU 0 and
    # 8B on GPU 1 at once (each GPU runs one process at a time), one repeat of the three variants per call (--add)
    packing) python3 -c "from common import random_model; random_model('1b'); random_model('8b')"
             for a in 1b:0 8b:1; do CUDA_VISIBLE_DEVICES=${a#*:} timeout 540 python3 packing.py --arch ${a%:*} \
               --rows 400 --repeats 1 --add --part-timeout 250 > "$OUT/packing_${a%:*}.log" 2>&1 & done
             wait; tail -n 12 "$OUT"/packing_*.log ;;
    packing1b) python3 -c "from common import random_model; random_model('1b')"
               timeout 540 python3 packing.py --arch 1b --rows 400 --repeats 3 --part-timeout 120 > "$OUT/packing_1b.log" 2>&1
               tail -n 14 "$OUT/packing_1b.log" ;;
    # memory while loading (FP8 from bf16 loads the whole bf16 model), three loaders side by side
    load8b) timeout 560 python3 load_peak.py --arch 8b --quant 4bit,16bit,fp8 ;;
    # sharded QLoRA (two GPUs): the 8B shape against the plain FSDP-QLoRA recipe; 32B under two T4s; 70B under 2 x 40 GiB
    sharded8b) timeout 420 python3 sharded.py --arch 8b --seq 2048 --batch 2 --steps 8 --variants nbkit,plain \
                 --part-timeout 200 ;;
    sharded32b) timeout 540 python3 sharded.py --arch 32b --seq 512 --batch 1 --steps 6 --card T4 \
                 --variants nbkit,single --part-timeout 260 --no-check ;;
    sharded70b) timeout 400 python3 sharded.py --arch 70b --seq 2048 --batch 1 --steps 5 --cap 40 \
                 --variants nbkit,single --part-timeout 190 ;;
    # the T4s' memory without their fp16 (the fp16 rehearsal above trained a zero loss: docs/sharding.md)
    sharded32b-cap) timeout 200 python3 sharded.py --arch 32b --seq 512 --batch 1 --steps 6 --cap 14.15 \
                 --variants nbkit --part-timeout 180 ;;
    # the memory grid (bench/grid.py): recommend()'s settings for 9 architectures on 5 real cards, rehearsed side by
    # side on one GPU; FP8 (bf16 checkpoints, converted and compiled: slow, and big on disk) in a call of its own
    grid) timeout 540 python3 grid.py --part-timeout 300 --start-within 300 --quants 4bit,16bit --builder-gib 10 ;;
    # what the first call left: Gemma 2 (Unsloth's block compile off, see nbkit.loading.models.NO_BLOCK_COMPILE), the small
    # models it ran out of time for, and FP8 on the 24 GB card (bf16 checkpoints converted and compiled: slow)
    grid-rest) timeout 540 python3 grid.py --part-timeout 450 --start-within 230 --steps 6 --procs 9 --tag _rest \
                 --archs gemma2-9b,8b,qwen3-8b,qwen2.5-7b,mistral-7b,1b,3b \
                 --quants-for "gemma2-9b=4bit,fp8;1b=4bit,16bit;3b=4bit;8b=fp8;qwen3-8b=fp8;qwen2.5-7b=fp8;mistral-7b=fp8" ;;
    # Gemma 2 again once its attention scores are modelled (memory.SCORE_BYTES), and the FP8 run the disk refused
    grid-gemma) timeout 540 python3 grid.py --part-timeout 500 --start-within 60 --steps 3 --tag _gemma \
                 --archs gemma2-9b,qwen2.5-7b --cards "RTX 3060 12GB,RTX 4060 Ti 16GB,RTX 4090 24GB" \
                 --quants-for "gemma2-9b=4bit,fp8;qwen2.5-7b=fp8" ;;
    # the 24 GB card once FP8 stopped being picked (measured slower with padding-free batches): 16-bit runs
    grid-4090) timeout 540 python3 grid.py --part-timeout 460 --start-within 330 --steps 3 --tag _4090 \
                 --cards "RTX 4090 24GB" --archs gemma2-9b,qwen3-8b,8b,qwen2.5-7b,mistral-7b --quants 16bit ;;
    # FP8 vs bf16 LoRA, one process each (speed: alone on the GPU), three alternating repeats:
    # fp8-<1b|8b|14b>-<8k|32k> (14b: the Qwen2.5-14B shape; 8k: 2048 x 4 tokens a step, 32k: 4096 x 8); one per call
    fp8-*)
      size=${stage#fp8-}; size=${size%-*}; level=${stage##*-}
      arch=$([ "$size" = 14b ] && echo qwen2.5-14b || echo "$size")
      shape=$([ "$level" = 32k ] && echo "--seq 4096 --batch 8" || echo "--seq 2048 --batch 4")
      python3 -c "from common import random_model; random_model('$arch')"
      timeout "${STAGE_TIMEOUT:-540}" python3 throughput.py --arch "$arch" --quant fp8 $shape --steps 6 \
        --repeats "${REPEATS:-3}" --variants bf16,fp8 --part-timeout 400 --tag "_fp8_vs_bf16_$level" ;;
    # the three set-ups of the README's headline (8B QLoRA): raw Unsloth, nbkit, transformers + peft + bitsandbytes,
    # three alternating repeats
    tput8b-x3) python3 -c "from common import random_model; random_model('8b')"
               timeout "${STAGE_TIMEOUT:-560}" python3 throughput.py --arch 8b --quant 4bit --seq 2048 --batch 4 \
                 --steps 8 --variants raw,nbkit,hf --repeats 3 --part-timeout 150 ;;
    # seconds to the GPU check, the form and a ready engine: Unsloth imported on a thread vs before everything
    import) timeout 200 python3 import_time.py ;;
    tput1b16) timeout 250 python3 throughput.py --arch 1b --quant 16bit --seq 2048 --batch 4 --steps 8 --part-timeout 100 ;;
    # stop/resume, a forced OOM, merged-from-4-bit reload and offline GGUF (the converter carried in .tools/)
    survive) NBKIT_TOOLS=$PWD/../.tools timeout 540 python3 session_survival.py --arch 1b ${SURVIVE_PARTS:+--parts $SURVIVE_PARTS} ;;
    probe) timeout 500 python3 probe_fallback.py --arch 1b --quant 4bit --tier 8GB --batch 32 --seq 2048 ;;
    lb8) timeout 300 python3 largest_batch.py --arch 1b --quant 4bit --tiers 8GB --seq 2048 ;;
    lb16) timeout 420 python3 largest_batch.py --arch 8b --quant 4bit --tiers 16GB,24GB --seq 2048 --steps 2 ;;
    ddp) timeout 580 python3 ddp_scaling.py --arch 1b --quant 16bit --seq 2048 --batch 4 --steps 12 --gpus 1,2 ;;
    # long runs: 60 steps each, the spread of the steady steps written beside the scaling
    ddp-long) timeout 560 python3 ddp_scaling.py --arch 1b --quant 16bit --seq 2048 --batch 4 --steps 60 --gpus 1,2 \
                --backends unsloth --timeout 200 ;;
    # steps long enough to pin the scaling down: 4096 x 8 tokens per GPU a step (about 0.6 s on one GPU), 40 steps,
    # 1 and 2 GPUs alternating three times
    ddp-32k) timeout 570 python3 ddp_scaling.py --arch 1b --quant 16bit --seq 4096 --batch 8 --steps 40 --gpus 1,2 \
               --backends unsloth --repeats 3 --timeout 150 --no-workflow --tag _32k ;;
    # each tier notebook, headless, on a random-weight model of its default architecture, under the tier's cap
    # (nbh100 needs a call of its own: FP8 quantization and compilation take minutes)
    nb8|nb16|nb24|nbh100)
      python3 -c "from common import random_model; random_model('1b'); random_model('8b')"
      cd ..
      case $stage in
        nb8) NB_TIMEOUT=200 nb 8gb -p model /tmp/nbkit-models/1b -p emulate_tier True -p save_gguf False ;;
        nb16) NB_TIMEOUT=240 nb 16gb -p model /tmp/nbkit-models/8b -p emulate_tier True -p save_merged False \
                -p save_gguf False ;;
        nb24) NB_TIMEOUT=300 nb 24gb -p model /tmp/nbkit-models/8b -p emulate_tier True -p save_merged False \
                -p save_gguf False ;;
        nbh100) NB_TIMEOUT=560 nb h100 -p model /tmp/nbkit-models/8b ;;
      esac
      cd bench ;;
    # a notebook session in real kernels under a T4 rehearsal: the 16 GB notebook Run All twice, the 8B plan loaded
    # twice then trained, keep_previous refused by the memory check, rehearsals scoped (needs .whl-nb)
    session) timeout "${STAGE_TIMEOUT:-570}" python3 session_rehearsal.py --arch 8b --parts "${SESSION_PARTS:-notebook,load}" ;;
    # mixture of experts (#37): Qwen3-MoE (8 of 48 layers) on a rehearsed 4090, nbkit vs raw Unsloth, and gpt-oss
    # (4 of 24 layers) on a rehearsed T4 with CUDA touched before nbkit (the allocator, #38); side by side
    moe) timeout "${STAGE_TIMEOUT:-500}" python3 moe.py --parts "${MOE_PARTS:-nbkit-qwen3moe,raw-qwen3moe,touched-gptoss}" \
           --layers "${MOE_LAYERS:-qwen3moe=8,gptoss=4,gemma3=0}" --steps 6 --part-timeout 400 ;;
    # the shapes that separate per-token from fixed memory (side by side), then raw Unsloth and nbkit, each alone
    moe-fit) timeout 560 python3 moe.py --parts shapes_16bit-qwen3moe,shapes_4bit-qwen3moe,shapes_4bit-gptoss,shapes_4bit-gemma3 \
               --then raw_16bit-qwen3moe,speed_16bit-qwen3moe --steps 8 --part-timeout 240 --out moe_fit.json ;;
    # today's models at full size (#37): one background pipeline (bench/moe_full.py) that outlasts a command, started
    # from a copy of the checkout (a later call re-sends the tree) and polled; what it has so far comes back as one file
    moe-full|moe-poll)
      if [ "$stage" = moe-full ] && [ ! -d /tmp/moe_full ]; then
        rm -rf /tmp/nbkit-src && mkdir -p /tmp/nbkit-src /tmp/moe_full && cp -r ../nbkit ../bench ../scripts /tmp/nbkit-src/
        (cd /tmp/nbkit-src/bench && PYTHONPATH=/tmp/site:/tmp/nbkit-src setsid nohup python3 moe_full.py \
           --phases "${MOE_PHASES:-compare,full,rest}" --start-within "${START_WITHIN:-1080}" \
           > /tmp/moe_full/pipeline.log 2>&1 < /dev/null &)
      fi
      end=$((SECONDS + ${POLL:-540}))
      while [ $SECONDS -lt $end ] && ! grep -q "^\[.*\] done" /tmp/moe_full/progress.txt 2>/dev/null; do sleep 10; done
      df -h / /tmp /dev/shm | sed 's/^/[df] /'; free -g | sed 's/^/[free] /'; nvidia-smi --query-gpu=memory.used --format=csv
      cat /tmp/moe_full/progress.txt; tail -n 5 /tmp/moe_full/pipeline.log
      tar czf "$OUT/moe_full.tgz" -C /tmp moe_full ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
  echo "=== $stage rc=$? $(date +%T)"
done
