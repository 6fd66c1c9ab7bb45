"""Steady-state speed and peak memory: nbkit's workflow vs raw Unsloth vs transformers + peft + bitsandbytes.

python bench/throughput.py --arch 8b --quant 4bit --seq 2048 --batch 4 --steps 10 [--variants raw,nbkit,hf]
Every variant trains the same random-weight model on the same synthetic rows (exactly `seq` tokens), LoRA
r=16 on all linear layers, adamw_8bit, bf16, gradient checkpointing, TRL's SFTTrainer:
  raw    Unsloth's FastLanguageModel with no nbkit code
  nbkit  nbkit.models.load + nbkit.train.run with the progress display on (text mode, as headless)
  hf     what a user without Unsloth writes: AutoModelForCausalLM (+ BitsAndBytesConfig NF4 for 4-bit),
         prepare_model_for_kbit_training, peft LoRA, non-reentrant checkpointing; Unsloth is never imported
Each variant runs in its own process (a process that loaded one model keeps part of it, which would inflate the
next peak). Speed is the median CUDA-synchronised step time after 2 warm-up (compilation) steps; peak is
torch.cuda.max_memory_reserved over training. Writes bench/results/throughput_<arch>_<quant>.json.
"""
from __future__ import annotations

import time

PROCESS_START = time.perf_counter()  # before any import: time to first step counts the imports too

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from common import (child_result, emit, observe, print_table, random_model, run_parser,  # noqa: E402
                    scratch_dir, step_timer, synthetic_data, write_json)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def sft_args(args, out):
    from trl import SFTConfig

    return SFTConfig(output_dir=out, per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                     max_steps=args.steps, learning_rate=2e-4, optim="adamw_8bit", logging_steps=1,
                     report_to="none", bf16=True, max_length=args.seq, save_strategy="no", disable_tqdm=True)


def raw_unsloth(path, args, data, timer):
    from unsloth import FastLanguageModel
    from trl import SFTTrainer

    model, tok = FastLanguageModel.from_pretrained(model_name=path, max_seq_length=args.seq,
                                                   load_in_4bit=args.quant == "4bit", dtype=None)
    model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0.0, bias="none",
                                             use_gradient_checkpointing="unsloth", target_modules=TARGETS)
    SFTTrainer(model=model, processing_class=tok, train_dataset=data.train, callbacks=[observe(timer)],
               args=sft_args(args, "/tmp/raw")).train()


def hf_baseline(path, args, data, timer):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTTrainer

    quant = None
    if args.quant == "4bit":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, quantization_config=quant,
                                                 device_map={"": 0})
    ckpt = {"use_reentrant": False}
    if quant is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs=ckpt)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt)
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS,
                                             bias="none", task_type="CAUSAL_LM"))
    SFTTrainer(model=model, processing_class=AutoTokenizer.from_pretrained(path), train_dataset=data.train,
               callbacks=[observe(timer)], args=sft_args(args, "/tmp/hf")).train()


def with_nbkit(path, args, data, timer):
    from nbkit import models, train
    from nbkit.config import RunConfig
    from nbkit.ui.progress import TrainingProgress

    cfg = RunConfig(model=path, quantization=args.quant, max_seq_length=args.seq, batch_size=args.batch,
                    grad_accum=1, max_steps=args.steps, save_steps=0, output_dir=scratch_dir("tput"))
    loaded = models.load(cfg, check_memory=False)
    train.run(loaded, data, [timer, TrainingProgress()])  # the progress display stays on


VARIANTS = {"raw": ("raw unsloth", raw_unsloth), "nbkit": ("nbkit", with_nbkit), "hf": ("hf+peft+bnb", hf_baseline)}


def one_variant(args) -> dict:
    if args.variant == "hf":
        os.environ["NBKIT_BACKEND"] = "transformers"  # keeps Unsloth out of this process entirely
    from nbkit import backend

    backend.ensure()
    import torch

    path = random_model(args.arch)
    data = synthetic_data(args.batch * args.steps, args.seq)
    timer = step_timer()
    torch.cuda.reset_peak_memory_stats()
    VARIANTS[args.variant][1](path, args, data, timer)
    step = timer.steady()
    return {"run": VARIANTS[args.variant][0], "variant": args.variant, "steps_timed": len(timer.times) - 2,
            "median_step_s": step, "tokens_per_s": args.batch * args.seq / step,
            "peak_gib": torch.cuda.max_memory_reserved() / 1024**3, "step_times": timer.times,
            # the first step (compilation, allocator growth), and the wait from the process's start (imports,
            # model load, trainer set-up) to the end of that step: what a notebook user waits for
            "first_step_s": timer.times[0],
            "start_to_first_step_s": timer.started_at + timer.times[0] - PROCESS_START}


def main() -> None:
    ap = run_parser(__doc__, steps=10)
    ap.add_argument("--variants", default="raw,nbkit,hf")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    ap.add_argument("--part-timeout", type=int, default=300)
    ap.add_argument("--tag", default="", help="suffix of the result file's name")
    args = ap.parse_args()
    if args.variant:
        emit(one_variant(args))
        return
    rows = []
    name = f"throughput_{args.arch}_{args.quant}{args.tag}.json"
    for v in args.variants.split(","):
        cmd = [sys.executable, __file__, "--arch", args.arch, "--quant", args.quant, "--seq", str(args.seq),
               "--batch", str(args.batch), "--steps", str(args.steps), "--variant", v]
        _, found, out = child_result(cmd, args.part_timeout)
        print(out[-1500:])
        rows.append(found or {"run": VARIANTS[v][0], "variant": v, "error": "no result"})
        write_json(name, {"args": vars(args), "rows": rows})
    by = {r["variant"]: r for r in rows if "tokens_per_s" in r}
    ratios = {}
    if "raw" in by and "nbkit" in by:
        ratios["nbkit_vs_raw_speed"] = by["nbkit"]["tokens_per_s"] / by["raw"]["tokens_per_s"]
    if "hf" in by:
        for v in ("raw", "nbkit"):
            if v in by:
                ratios[f"{v}_vs_hf_speed"] = by[v]["tokens_per_s"] / by["hf"]["tokens_per_s"]
                ratios[f"{v}_vs_hf_peak"] = by[v]["peak_gib"] / by["hf"]["peak_gib"]
    print_table(rows, ["run", "steps_timed", "median_step_s", "tokens_per_s", "peak_gib", "first_step_s",
                       "start_to_first_step_s"])
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    write_json(name, {"args": vars(args), "rows": rows, "ratios": ratios})


if __name__ == "__main__":
    main()
