"""Sharded QLoRA across GPUs: per-GPU memory (predicted vs measured) and speed, nbkit vs plain FSDP-QLoRA vs one GPU.

python bench/sharded.py --arch 32b --seq 512 --batch 1 --steps 8 --processes 2 --card T4 --variants nbkit,single
Variants, each its own launch (torchrun for the sharded ones, one process per GPU):
  nbkit   nbkit.loading.models.load + nbkit.training.train.run with parallelism="fsdp" (FSDP2 through the Trainer), adapters
          verified and saved by rank 0 from the gathered tensors
  plain   the FSDP-QLoRA recipe of the peft/accelerate docs: BitsAndBytesConfig(bnb_4bit_quant_storage=bf16),
          get_peft_model, TRL's SFTTrainer with the Trainer's fsdp options and model gradient checkpointing
  single  nbkit on one GPU, uncapped (transformers + peft, the engine the sharded path uses): what sharding costs
--card T4 rehearses that card on every GPU (its memory after the CUDA context, and its abilities: fp16 on a T4);
--cap GIB only caps torch's memory. The model is a random-weight checkpoint of the shape, saved pre-quantized
(bench/common.prequantized_model). Rows are exactly `seq` tokens (the worst case the memory model plans for).
Peaks are torch.cuda.max_memory_allocated / _reserved of each rank over the whole process; speed is the median
CUDA-synchronised step after 2 warm-up steps, in tokens/s over all GPUs. Writes bench/results/sharded_<arch>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from common import (ARCHS, RESULTS, child_result, emit, make_data, observe, prequantized_model, print_table,
                    scratch_dir, step_timer, write_json)

HERE = Path(__file__).resolve()
SETUPS = {
    "nbkit": {"loader": "nbkit.loading.models.load(RunConfig(parallelism='fsdp')): NF4 with bnb_4bit_quant_storage=bf16 "
                        "into CPU memory, LoRA r=16 all linear, no k-bit preparation",
              "trainer": "nbkit.training.train.run: SFTTrainer with fsdp=True, fsdp_config={version: 2, "
                         "reshard_after_forward: True, activation_checkpointing: False} with the model's own gradient "
                         "checkpointing (nbkit.gpus.fsdp.trainer_args), optim adamw_torch"},
    "plain": {"loader": "AutoModelForCausalLM.from_pretrained(quantization_config=BitsAndBytesConfig(nf4, double "
                        "quant, compute bf16, quant_storage bf16), dtype=bf16)",
              "peft": "get_peft_model(LoraConfig(r=16, lora_alpha=16, target_modules='all-linear'))",
              "trainer": "SFTTrainer(args=SFTConfig(fsdp='full_shard auto_wrap', fsdp_config={use_orig_params: "
                         "False, cpu_ram_efficient_loading: True}, gradient_checkpointing=True, bf16=True))",
              "source": "peft's 'FSDP + QLoRA' guide and accelerate's FSDP docs"},
    "single": {"loader": "nbkit.loading.models.load on one GPU (transformers + peft + bitsandbytes), uncapped",
               "trainer": "nbkit.training.train.run"},
}


def limit_memory(args, device: int):
    from nbkit.planning import cards, hardware

    if args.card:
        return cards.emulate(args.card, device)
    if args.cap:
        return hardware.cap_memory(args.cap, device)
    return hardware.check_gpu(device)


def worker(args) -> None:
    """One rank of a variant: train, measure this GPU, emit one RESULT line."""
    import torch

    from nbkit.gpus.distributed import local_rank, world_size

    device = local_rank()
    torch.cuda.set_device(device)
    gpu = limit_memory(args, device)
    path = prequantized_model(args.arch)
    rows = make_data("uniform", max(64, args.steps * args.batch * world_size() * 2), args.seq)
    timer = step_timer(warmup=2)
    out = scratch_dir(f"sharded-{args.worker}")
    row = {"variant": args.worker, "rank": int(os.environ.get("RANK", 0)), "processes": world_size(),
           "gpu": gpu.name, "cap_gib": gpu.capped_gib}
    if args.worker == "plain":
        losses = _plain(args, path, rows, timer, out)
    else:
        losses = _nbkit(args, path, rows, timer, out, row)
    step = timer.steady()
    tokens = args.seq * args.batch * world_size()
    row.update(steps=len(losses), first_loss=losses[0] if losses else None, last_loss=losses[-1] if losses else None,
               step_s=step, tokens_per_s=tokens / step if step else None,
               peak_allocated_gib=torch.cuda.max_memory_allocated(device) / 1024**3,
               peak_reserved_gib=torch.cuda.max_memory_reserved(device) / 1024**3)
    emit(row)


def _nbkit(args, path, rows, timer, out, row) -> list[float]:
    import torch

    from nbkit.exporting import export, verify
    from nbkit.gpus import fsdp
    from nbkit.loading import models
    from nbkit.training import train
    from nbkit.planning.config import RunConfig
    from nbkit.gpus.distributed import is_main, world_size
    from nbkit.planning.memory import estimate
    from nbkit.specs import spec_for

    cfg = RunConfig(model=path, quantization="4bit", max_seq_length=args.seq, batch_size=args.batch, grad_accum=1,
                    max_steps=args.steps, warmup_steps=1, lora_r=16, lora_alpha=16, save_steps=0,
                    output_dir=out, parallelism="fsdp" if args.worker == "nbkit" else "auto")
    loaded = models.load(cfg, check_memory=not args.no_check)
    part = estimate(loaded.config, spec_for(path), loaded.backend, processes=world_size())
    row.update(predicted_reserved_gib=part.peak_reserved, predicted_total_gib=part.peak_total,
               predicted=part.as_dict(), parallelism=loaded.config.parallelism, backend=loaded.backend,
               load_allocated_gib=torch.cuda.max_memory_allocated() / 1024**3,
               load_reserved_gib=torch.cuda.max_memory_reserved() / 1024**3)
    before = verify.snapshot(loaded.model)
    result = train.run(loaded, rows, observers=[timer], claim=False)
    report = verify.adapters_changed(loaded.model, before)
    row.update(adapters_ok=report.ok, lora_changed=report.fraction_changed, shard_fraction=fsdp.local_fraction(
        loaded.model), steady_tokens_per_s_nbkit=result.steady_tokens_per_second())
    if fsdp.sharded(loaded.config):
        loaded.adapter_state = fsdp.full_adapter_state(loaded.model)
    if is_main():
        saved = export.save_lora(loaded, Path(out) / "lora_adapters", rescue=False)
        row["adapter_files"] = sorted(p.name for p in saved.iterdir())
    return [loss for _, loss in result.losses]


def _plain(args, path, rows, timer, out) -> list[float]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, dtype=torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    args_ = SFTConfig(output_dir=out, per_device_train_batch_size=args.batch, max_steps=args.steps, bf16=True,
                      learning_rate=2e-4, logging_steps=1, report_to="none", save_strategy="no", max_length=args.seq,
                      gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
                      fsdp="full_shard auto_wrap",
                      fsdp_config={"use_orig_params": False, "cpu_ram_efficient_loading": True},
                      disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=args_, train_dataset=rows.train,
                         processing_class=AutoTokenizer.from_pretrained(path), callbacks=[observe(timer)])
    trainer.train()
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def launch(args, variant: str) -> list[dict]:
    """All ranks' rows of one variant (each rank prints one RESULT line)."""
    from nbkit.gpus.distributed import free_port

    me = [sys.executable, str(HERE), "--worker", variant, "--arch", args.arch, "--seq", str(args.seq), "--batch",
          str(args.batch), "--steps", str(args.steps)] + (["--no-check"] if args.no_check else [])
    if variant != "single":  # one GPU, uncapped: the comparison
        me += (["--card", args.card] if args.card else []) + (["--cap", str(args.cap)] if args.cap else [])
        me = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.processes),
              "--master_port", str(free_port())] + me[1:]
    env = {**os.environ, "NBKIT_BACKEND": "transformers"}
    rc, _, text = child_result(me, args.part_timeout, env)
    found = [json.loads(line[7:]) for line in text.splitlines() if line.startswith("RESULT ")]
    if rc != 0 or not found:
        print(text[-4000:])
        return [{"variant": variant, "error": f"exit {rc}", "tail": text[-1500:]}]
    return sorted(found, key=lambda r: r["rank"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="8b", choices=sorted(ARCHS))
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--card", help="rehearse this card on every GPU (nbkit.planning.cards), e.g. T4")
    ap.add_argument("--cap", type=float, help="cap torch's memory on every GPU to this many GiB")
    ap.add_argument("--variants", default="nbkit,plain,single")
    ap.add_argument("--part-timeout", type=int, default=300)
    ap.add_argument("--no-check", action="store_true", help="train even where the memory model says it won't fit")
    ap.add_argument("--tag", default="")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    prequantized_model(args.arch)  # built once, before the timed processes
    rows = [r for v in args.variants.split(",") for r in launch(args, v)]
    print_table(rows, ["variant", "rank", "processes", "cap_gib", "predicted_reserved_gib", "peak_allocated_gib",
                       "peak_reserved_gib", "tokens_per_s", "step_s", "adapters_ok", "error"])
    name = f"sharded_{args.arch}{args.tag}.json"
    old = json.loads((RESULTS / name).read_text()) if (RESULTS / name).exists() else {}
    runs = [r for r in old.get("runs", []) if (r.get("card"), r.get("cap_arg")) != (args.card, args.cap)
            or r.get("variant") not in args.variants.split(",")]
    runs += [{**r, "card": args.card, "cap_arg": args.cap, "seq": args.seq, "batch": args.batch} for r in rows]
    write_json(name, {"arch": args.arch, "model_shape": ARCHS[args.arch], "setups": SETUPS, "runs": runs})


if __name__ == "__main__":
    main()
