"""Speed, first step and peak memory: nbkit's workflow vs raw Unsloth vs transformers + peft + bitsandbytes.

python bench/throughput.py --arch 8b --quant 4bit --seq 2048 --batch 4 --steps 10 [--variants raw,nbkit,hf]
    [--repeats 3] [--lengths uniform|mixed]
Every variant trains the same random-weight model on the same rows (uniform: exactly `seq` tokens; mixed:
lognormal lengths as real data has), LoRA r=16 on all linear layers, each set up as its users set it up
(SETUPS below, written into the result file):
  raw          Unsloth's FastLanguageModel + TRL's SFTTrainer exactly as Unsloth's published notebooks do it
  nbkit        nbkit.loading.models.load + nbkit.training.train.run with the progress display on (text mode, as headless)
  nbkit-quiet  the same with no display at all (the display's cost is the difference)
  bf16, fp8    nbkit (no display) in 16-bit LoRA and in FP8 LoRA, whatever --quant says: FP8's speed-up
  hf           the peft/TRL documentation's QLoRA recipe: BitsAndBytesConfig NF4 + SFTTrainer(peft_config=...);
               Unsloth is never imported
Each run is its own process (a process that loaded one model keeps part of it, which would inflate the next
peak); with --repeats N the variants alternate N times in one call. Speed is the median CUDA-synchronised step
time after 2 warm-up (compilation) steps; peak is torch.cuda.max_memory_reserved (and _allocated) over the
run, load included. Writes bench/results/throughput_<arch>_<quant><tag>.json.
"""
from __future__ import annotations

import time

PROCESS_START = time.perf_counter()  # before any import: time to first step counts the imports too

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import common  # noqa: E402
from common import (child_result, emit, make_data, observe, print_table, random_model, run_parser,  # noqa: E402
                    scratch_dir, step_timer, write_json)

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


UNSLOTH_NOTEBOOK = dict(gradient_accumulation_steps=1, warmup_steps=5, learning_rate=2e-4, logging_steps=1,
                        optim="adamw_8bit", weight_decay=0.001, lr_scheduler_type="linear", seed=3407,
                        report_to="none")
SETUPS = {
    "raw": {"loader": "FastLanguageModel.from_pretrained(load_in_4bit=<quant>, dtype=None)",
            "peft": "FastLanguageModel.get_peft_model(r=16, lora_alpha=16, lora_dropout=0, bias='none', "
                    "use_gradient_checkpointing='unsloth', random_state=3407)",
            "trainer": "SFTTrainer(model, processing_class=tokenizer, train_dataset) with no data_collator "
                       "(Unsloth picks padding-free or padded batches itself)",
            "sft_config": UNSLOTH_NOTEBOOK, "source": "Unsloth's Llama 3.1/3.2 conversational notebooks"},
    "nbkit": {"loader": "nbkit.loading.models.load(RunConfig(...)) (Unsloth underneath)", "trainer": "nbkit.training.train.run",
              "display": "TrainingProgress, text mode"},
    "nbkit-quiet": {"loader": "nbkit.loading.models.load", "trainer": "nbkit.training.train.run", "display": "none"},
    "nbkit-live": {"loader": "nbkit.loading.models.load", "trainer": "nbkit.training.train.run",
                   "display": "TrainingProgress, widgets mode (a notebook's): stats, and the loss curve redrawn every "
                              "2 s on its own thread"},
    "bf16": {"loader": "nbkit.loading.models.load(quantization='16bit')", "trainer": "nbkit.training.train.run", "display": "none"},
    "fp8": {"loader": "nbkit.loading.models.load(quantization='fp8') (Unsloth converts the bf16 checkpoint)",
            "trainer": "nbkit.training.train.run", "display": "none"},
    "hf": {"loader": "AutoModelForCausalLM.from_pretrained(quantization_config=BitsAndBytesConfig(load_in_4bit, "
                     "nf4, double quant, compute bf16)) for 4-bit; dtype=bfloat16",
           "peft": "SFTTrainer(peft_config=LoraConfig(r=16, lora_alpha=16, all linear))",
           "sft_config": dict(gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
                              bf16=True, learning_rate=2e-4, optim="adamw_8bit", logging_steps=1,
                              report_to="none"),
           "source": "TRL's SFTTrainer docs (Train adapters with PEFT) and peft's QLoRA guide"},
}


def sft_args(args, out, **settings):
    from trl import SFTConfig

    return SFTConfig(output_dir=out, per_device_train_batch_size=args.batch, max_steps=args.steps,
                     max_length=args.seq, save_strategy="no", disable_tqdm=True, **settings)


def raw_unsloth(path, args, data, timer):
    from unsloth import FastLanguageModel
    from trl import SFTTrainer

    model, tok = FastLanguageModel.from_pretrained(model_name=path, max_seq_length=args.seq,
                                                   load_in_4bit=args.quant == "4bit", dtype=None)
    model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0, bias="none",
                                             use_gradient_checkpointing="unsloth", random_state=3407,
                                             target_modules=TARGETS)
    SFTTrainer(model=model, processing_class=tok, train_dataset=data.train, callbacks=[observe(timer)],
               args=sft_args(args, "/tmp/raw", **UNSLOTH_NOTEBOOK)).train()


def hf_baseline(path, args, data, timer):
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTTrainer

    quant = None
    if args.quant == "4bit":
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, quantization_config=quant,
                                                 device_map={"": 0})
    lora = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                      task_type="CAUSAL_LM")
    SFTTrainer(model=model, processing_class=AutoTokenizer.from_pretrained(path), train_dataset=data.train,
               peft_config=lora, callbacks=[observe(timer)],
               args=sft_args(args, "/tmp/hf", **SETUPS["hf"]["sft_config"])).train()


def with_nbkit(path, args, data, timer, display=True, quant=None, mode="auto"):
    from nbkit.loading import models
    from nbkit.training import train
    from nbkit.planning.config import RunConfig
    from nbkit.ui.progress import TrainingProgress

    cfg = RunConfig(model=path, quantization=quant or args.quant, max_seq_length=args.seq, batch_size=args.batch,
                    grad_accum=1, max_steps=args.steps, save_steps=0, output_dir=scratch_dir("tput"))
    loaded = models.load(cfg, check_memory=False)
    progress = TrainingProgress(mode=mode)
    train.run(loaded, data, [timer, progress] if display else [timer])
    # what the display did, so a display that broke (and was dropped from the run) cannot pass for a cheap one
    timer.display = {"redraws": progress.redraws, "kind": type(progress.display).__name__} if display else None


VARIANTS = {"raw": ("raw unsloth", raw_unsloth), "nbkit": ("nbkit", with_nbkit),
            "nbkit-quiet": ("nbkit, no display", lambda *a: with_nbkit(*a, display=False)),
            "nbkit-live": ("nbkit, live widgets and curve", lambda *a: with_nbkit(*a, mode="widgets")),
            "hf": ("hf+peft+bnb", hf_baseline),
            # precision against precision, both through nbkit (bench/fp8_vs_bf16.py reads these)
            "bf16": ("nbkit bf16 LoRA", lambda *a: with_nbkit(*a, display=False, quant="16bit")),
            "fp8": ("nbkit FP8 LoRA", lambda *a: with_nbkit(*a, display=False, quant="fp8"))}


def one_variant(args) -> dict:
    if args.variant == "hf":
        os.environ["NBKIT_BACKEND"] = "transformers"  # keeps Unsloth out of this process entirely
    from nbkit.loading import backend

    backend.ensure()
    import torch

    path = random_model(args.arch)
    data = make_data(args.lengths, args.batch * args.steps, args.seq)
    timer = step_timer()
    torch.cuda.reset_peak_memory_stats()
    VARIANTS[args.variant][1](path, args, data, timer)
    step = timer.steady()
    tokens = sum(len(r) for r in data.train["input_ids"]) / len(data.train)  # per row, on average
    return {"run": VARIANTS[args.variant][0], "variant": args.variant, "steps_timed": len(timer.times) - 2,
            "median_step_s": step, "tokens_per_s": args.batch * tokens / step,
            "peak_gib": torch.cuda.max_memory_reserved() / 1024**3,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 1024**3, "step_times": timer.times,
            "gpu": torch.cuda.get_device_name(), "display": getattr(timer, "display", None),
            # the first step (compilation, allocator growth), and the wait from the process's start (imports,
            # model load, trainer set-up) to the end of that step: what a notebook user waits for
            "first_step_s": timer.times[0],
            "start_to_first_step_s": timer.started_at + timer.times[0] - PROCESS_START}


def summarise(rows: list[dict]) -> list[dict]:
    """Per variant over its repeats: median and min-max of each figure."""
    return common.summarise(rows, ("tokens_per_s", "median_step_s", "first_step_s", "start_to_first_step_s",
                                   "peak_gib", "peak_allocated_gib"), done="tokens_per_s")


def main() -> None:
    ap = run_parser(__doc__, steps=10)
    ap.add_argument("--variants", default="raw,nbkit,hf")
    ap.add_argument("--repeats", type=int, default=1, help="alternate the variants this many times")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    ap.add_argument("--part-timeout", type=int, default=300)
    ap.add_argument("--tag", default="", help="suffix of the result file's name")
    args = ap.parse_args()
    if args.variant:
        emit(one_variant(args))
        return
    rows = []
    name = f"throughput_{args.arch}_{args.quant}{args.tag}.json"
    variants = args.variants.split(",")
    setups = {v: SETUPS[v] for v in variants}
    for _ in range(args.repeats):
        for v in variants:
            cmd = [sys.executable, __file__, "--arch", args.arch, "--quant", args.quant, "--seq", str(args.seq),
                   "--batch", str(args.batch), "--steps", str(args.steps), "--lengths", args.lengths,
                   "--variant", v]
            _, found, out = child_result(cmd, args.part_timeout)
            print(out[-1500:])
            rows.append(found or {"run": VARIANTS[v][0], "variant": v, "error": "no result"})
            write_json(name, {"args": vars(args), "setups": setups, "rows": rows})
    summary = summarise(rows)
    by = {r["variant"]: r for r in summary}
    ratios = {}
    if "raw" in by and "nbkit" in by:
        ratios["nbkit_vs_raw_speed"] = by["nbkit"]["tokens_per_s"] / by["raw"]["tokens_per_s"]
        ratios["nbkit_minus_raw_first_step_s"] = by["nbkit"]["first_step_s"] - by["raw"]["first_step_s"]
        ratios["nbkit_minus_raw_start_to_first_step_s"] = (by["nbkit"]["start_to_first_step_s"]
                                                           - by["raw"]["start_to_first_step_s"])
    if "nbkit" in by and "nbkit-quiet" in by:
        ratios["display_overhead"] = by["nbkit-quiet"]["tokens_per_s"] / by["nbkit"]["tokens_per_s"] - 1
    if "nbkit-live" in by and "nbkit-quiet" in by:
        ratios["live_display_overhead"] = by["nbkit-quiet"]["tokens_per_s"] / by["nbkit-live"]["tokens_per_s"] - 1
    if "fp8" in by and "bf16" in by:
        ratios["fp8_vs_bf16_speed"] = by["fp8"]["tokens_per_s"] / by["bf16"]["tokens_per_s"]
    if "hf" in by:
        for v in ("raw", "nbkit"):
            if v in by:
                ratios[f"{v}_vs_hf_speed"] = by[v]["tokens_per_s"] / by["hf"]["tokens_per_s"]
                ratios[f"{v}_vs_hf_peak"] = by[v]["peak_gib"] / by["hf"]["peak_gib"]
    print_table(rows, ["run", "steps_timed", "median_step_s", "tokens_per_s", "peak_gib", "first_step_s",
                       "start_to_first_step_s"])
    print("\nmedian over repeats:")
    print_table(summary, ["run", "repeats", "tokens_per_s", "first_step_s", "start_to_first_step_s", "peak_gib",
                          "peak_allocated_gib"])
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    gpu = next((r["gpu"] for r in rows if r.get("gpu")), "")
    write_json(name, {"args": vars(args), "gpu": gpu, "setups": setups, "rows": rows, "summary": summary,
                      "ratios": ratios})


if __name__ == "__main__":
    main()
