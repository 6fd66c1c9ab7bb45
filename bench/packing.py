"""One epoch of mixed-length data: nbkit (packing "auto") vs raw Unsloth's default vs raw Unsloth with packing=True.

python bench/packing.py --arch 1b --rows 500 --seq 2048 --batch 8 --repeats 3
Every variant trains one epoch of the same pre-tokenized rows (bench/common.py's mixed_data: lognormal lengths,
median about 400 tokens, about 5 % cut at `seq`, the first 40 % of each row a masked prompt) on the same random-weight
model in 4-bit, LoRA r=16 on all linear layers, batch `batch`, no accumulation, as their users set them up:
  raw          Unsloth's notebook recipe (bench/throughput.py's UNSLOTH_NOTEBOOK), SFTTrainer with packing=False
  raw-packed   the same with packing=True (TRL's best-fit-decreasing packing, Unsloth's packed attention)
  nbkit        nbkit.loading.models.load + nbkit.training.train.run, packing left at "auto" (nothing else set)
Each run is its own process, and with --repeats N the variants alternate N times. The epoch's time is from building
the trainer (which prepares and packs the data) to the end of train(); the load is timed apart. The loss after the
epoch is measured the same way for every variant: the mean answer-token loss of 64 held-out rows of the same
distribution, one row at a time. Memory: torch's allocated and reserved peaks over the whole process (load included),
and for nbkit the plan nbkit.planning.memory.estimate makes for its settings. Writes bench/results/packing_<arch>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import common
from common import RESULTS, child_result, emit, mixed_data, print_table, random_model, scratch_dir, write_json

from throughput import TARGETS, UNSLOTH_NOTEBOOK

HELD_OUT = 64


def held_out_loss(model, rows) -> float:
    """Mean loss over the answer tokens of held-out rows, each on its own (no padding, no packing)."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in zip(rows["input_ids"], rows["labels"]):
            n = sum(1 for label in labels[1:] if label != -100)
            out = model(input_ids=torch.tensor([ids], device="cuda"), labels=torch.tensor([labels], device="cuda"))
            total, count = total + out.loss.float().item() * n, count + n
    return total / count


def raw_unsloth(path, args, data, packing: bool) -> dict:
    from unsloth import FastLanguageModel
    from trl import SFTConfig, SFTTrainer

    start = time.perf_counter()
    model, tok = FastLanguageModel.from_pretrained(model_name=path, max_seq_length=args.seq, load_in_4bit=True,
                                                   dtype=None)
    model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, lora_dropout=0, bias="none",
                                             use_gradient_checkpointing="unsloth", random_state=3407,
                                             target_modules=TARGETS)
    loaded = time.perf_counter()
    trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=data.train,
                         args=SFTConfig(output_dir=scratch_dir("raw"), per_device_train_batch_size=args.batch,
                                        num_train_epochs=1, max_length=args.seq, packing=packing, save_strategy="no",
                                        disable_tqdm=True, **UNSLOTH_NOTEBOOK))
    trainer.train()
    done = time.perf_counter()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return dict(model=model, load_s=loaded - start, epoch_s=done - loaded, steps=trainer.state.global_step,
                last_train_loss=losses[-1] if losses else None)


def with_nbkit(path, args, data) -> dict:
    from nbkit.loading import models
    from nbkit.training import train
    from nbkit.planning.config import RunConfig
    from nbkit.planning.memory import estimate
    from nbkit.specs import spec_for

    cfg = RunConfig(model=path, quantization="4bit", max_seq_length=args.seq, batch_size=args.batch, grad_accum=1,
                    max_steps=0, num_epochs=1, save_steps=0, save_minutes=0, output_dir=scratch_dir("nbkit"))
    start = time.perf_counter()
    loaded = models.load(cfg, check_memory=False)
    after_load = time.perf_counter()
    result = train.run(loaded, data)
    done = time.perf_counter()
    plan = estimate(cfg, spec_for(path), "unsloth")
    return dict(model=loaded.model, load_s=after_load - start, epoch_s=done - after_load, steps=result.steps,
                last_train_loss=result.losses[-1][1] if result.losses else None, packing=result.packing.describe(),
                packed=result.packing.on, predicted_reserved_gib=plan.reserved,
                predicted_allocated_gib=plan.allocated)


VARIANTS = {"nbkit": ("nbkit, packing auto", with_nbkit),
            "raw": ("raw unsloth, default", lambda *a: raw_unsloth(*a, packing=False)),
            "raw-packed": ("raw unsloth, packing=True", lambda *a: raw_unsloth(*a, packing=True))}


def one_variant(args) -> dict:
    # Unsloth writes its compiled kernels into the working folder: one per architecture, so that two runs on two
    # GPUs never write the same files
    work = os.path.join("/tmp", f"nbkit-packing-{args.arch}")
    os.makedirs(work, exist_ok=True)
    os.chdir(work)
    from nbkit.loading import backend

    backend.ensure()
    import torch

    path = random_model(args.arch)
    data = mixed_data(args.rows, args.seq, seed=0)
    held = mixed_data(HELD_OUT, args.seq, seed=1).train
    torch.cuda.reset_peak_memory_stats()
    out = VARIANTS[args.variant][1](path, args, data)
    model = out.pop("model")
    peaks = dict(peak_reserved_gib=torch.cuda.max_memory_reserved() / 1024**3,
                 peak_allocated_gib=torch.cuda.max_memory_allocated() / 1024**3)
    model.eval()
    tokens = sum(len(r) for r in data.train["input_ids"])
    return {"run": VARIANTS[args.variant][0], "variant": args.variant, **out, **peaks,
            "held_out_loss": held_out_loss(model, held), "epoch_tokens": tokens,
            "tokens_per_s": tokens / out["epoch_s"], "gpu": torch.cuda.get_device_name()}


def summarise(rows: list[dict]) -> list[dict]:
    out = common.summarise(rows, ("epoch_s", "held_out_loss", "load_s", "peak_reserved_gib", "peak_allocated_gib"),
                           done="epoch_s")
    for row in out:  # an epoch's optimizer steps are the same in every repeat of a variant
        row["steps"] = next(r["steps"] for r in rows if r["variant"] == row["variant"] and "steps" in r)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="1b")
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", default="nbkit,raw,raw-packed")
    ap.add_argument("--part-timeout", type=int, default=400)
    ap.add_argument("--add", action="store_true", help="add this call's repeats to those already in the result file "
                    "(the same settings): a device call is limited to 10 minutes")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        emit(one_variant(args))
        return
    name, rows = f"packing_{args.arch}.json", []
    settings = {k: getattr(args, k) for k in ("arch", "rows", "seq", "batch", "variants")}
    if args.add and (RESULTS / name).exists():
        before = json.loads((RESULTS / name).read_text())
        if {k: before["args"].get(k) for k in settings} != settings:
            sys.exit(f"--add: {name} holds runs with other settings ({before['args']}); not mixing them")
        rows = before["rows"]
    variants = args.variants.split(",")
    first = max((r["repeat"] for r in rows), default=0)
    for repeat in range(first, first + args.repeats):
        # alternate, and rotate who goes first: Unsloth's compile cache is warm for whoever comes later
        order = variants[repeat % len(variants):] + variants[:repeat % len(variants)]
        for v in order:
            cmd = [sys.executable, os.path.abspath(__file__), "--arch", args.arch, "--rows", str(args.rows), "--seq",
                   str(args.seq), "--batch", str(args.batch), "--variant", v]
            rc, found, out = child_result(cmd, args.part_timeout)
            print(out[-1200:], flush=True)
            rows.append({**(found or {"run": VARIANTS[v][0], "variant": v, "error": f"no result (rc {rc})"}),
                         "repeat": repeat + 1})
            write_json(name, {"args": vars(args), "rows": rows})
    summary = summarise(rows)
    print_table(rows, ["run", "repeat", "steps", "epoch_s", "held_out_loss", "peak_reserved_gib", "load_s"])
    print("\nmedian over repeats:")
    print_table(summary, ["run", "repeats", "steps", "epoch_s", "held_out_loss", "peak_reserved_gib",
                          "peak_allocated_gib"])
    gpu = next((r["gpu"] for r in rows if r.get("gpu")), "")
    write_json(name, {"args": vars(args), "gpu": gpu, "rows": rows, "summary": summary})


if __name__ == "__main__":
    main()
