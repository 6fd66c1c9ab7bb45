"""Loss parity: nbkit vs raw Unsloth vs transformers + peft on the same seed, data and LoRA initialisation.

python bench/loss_parity.py --arch 1b --quant 4bit --steps 50 --batch 4 --seq 512
Three runs, each in its own process (the transformers one never imports Unsloth), on the shipped instruction
data with completion-only labels: nbkit with backend 'unsloth', raw Unsloth (FastLanguageModel + TRL's
SFTTrainer, no nbkit code, the same trainer settings) and nbkit with backend 'transformers'. The LoRA A matrices are
re-initialised from one seeded generator in both (B starts at zero), so the runs start from identical
weights and see the same batches in the same order. Tolerance: every step within 2% relative loss, for nbkit
vs raw Unsloth (nbkit's code is the only difference) and for Unsloth vs transformers (other kernels: fused
attention, RoPE, cross-entropy, checkpointing). GPU training is not bitwise repeatable (4-bit backward kernels
accumulate in varying order), so even identical code differs by a fraction of a percent.
--from-file recomputes the summary of a saved result from its per-step rows, without training.
Writes bench/results/loss_parity_<arch>_<quant>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from common import child_result, emit, print_table, random_model, run_parser, scratch_dir, write_json

TOLERANCE = 0.02


def reinit_lora(model, seed: int) -> int:
    """Same A matrices in both backends (kaiming-uniform bound as peft uses), B = 0; returns tensors touched."""
    import math

    import torch

    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "lora_A" in name:
                bound = 1 / math.sqrt(p.shape[1])
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1).mul_(bound).to(p.dtype))
                n += 1
            elif "lora_B" in name:
                p.zero_()
                n += 1
    return n


def one_backend(args) -> dict:
    os.environ["NBKIT_BACKEND"] = args.backend
    from nbkit.loading import backend

    backend.ensure()
    from nbkit.loading import data, models
    from nbkit.training import train
    from nbkit.planning.config import RunConfig

    cfg = RunConfig(model=random_model(args.arch), quantization=args.quant, max_seq_length=args.seq,
                    batch_size=args.batch, grad_accum=1, max_steps=args.steps, learning_rate=2e-4, warmup_steps=5,
                    save_steps=0, lora_dropout=0.0, output_dir=scratch_dir(f"parity-{args.backend}"))
    if args.backend == "raw":
        return raw_unsloth(cfg)
    loaded = models.load(cfg, check_memory=False)
    touched = reinit_lora(loaded.model, seed=1234)
    prepared = data.prepare(cfg, loaded.tokenizer)
    result = train.run(loaded, prepared, progress=False)
    return {"backend": args.backend, "lora_tensors": touched, "losses": [l for _, l in result.losses],
            "tokens": result.tokens}


def raw_unsloth(cfg) -> dict:
    """What a user of Unsloth alone writes, with the same trainer settings as nbkit's run (so the comparison
    isolates nbkit's code) on the same tokenized rows."""
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel

    from nbkit.loading import data

    model, tok = FastLanguageModel.from_pretrained(model_name=cfg.model, max_seq_length=cfg.max_seq_length,
                                                   load_in_4bit=cfg.quantization == "4bit", dtype=None)
    model = FastLanguageModel.get_peft_model(model, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0,
                                             bias="none", target_modules=list(cfg.target_modules),
                                             use_gradient_checkpointing="unsloth", random_state=cfg.seed)
    touched = reinit_lora(model, seed=1234)
    prepared = data.prepare(cfg, tok)
    args = SFTConfig(output_dir=cfg.output_dir, per_device_train_batch_size=cfg.batch_size,
                     gradient_accumulation_steps=1, learning_rate=cfg.learning_rate, max_steps=cfg.max_steps,
                     warmup_steps=cfg.warmup_steps, lr_scheduler_type="linear", optim="adamw_8bit",
                     weight_decay=cfg.weight_decay, seed=cfg.seed, data_seed=cfg.seed, logging_steps=1,
                     save_strategy="no", report_to="none", max_length=cfg.max_seq_length, disable_tqdm=True)
    trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=prepared.train, args=args)
    trainer.train()
    losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
    return {"backend": "raw", "lora_tensors": touched, "losses": losses}


def main() -> None:
    ap = run_parser(__doc__, steps=50, seq=512)
    ap.add_argument("--backend", help=argparse.SUPPRESS)  # internal: one backend in this process
    ap.add_argument("--from-file", help="a saved result: recompute its summary from its rows")
    args = ap.parse_args()
    if args.from_file:
        saved = json.loads(open(args.from_file).read())
        args = argparse.Namespace(**saved["args"])
        write_summary(args, saved["rows"])
        return
    if args.backend:
        emit(one_backend(args))
        return
    runs = {}
    for b in ("unsloth", "raw", "transformers"):
        cmd = [sys.executable, __file__, "--arch", args.arch, "--quant", args.quant, "--steps", str(args.steps),
               "--batch", str(args.batch), "--seq", str(args.seq), "--backend", b]
        _, found, out = child_result(cmd, 400)
        if not found:
            print(out[-3000:])
            raise SystemExit(f"{b}: no result")
        runs[b] = found
    u, r, h = (runs[b]["losses"] for b in ("unsloth", "raw", "transformers"))
    rows = [{"step": i + 1, "nbkit": a, "raw": c, "hf": b, "rel_diff_raw": abs(a - c) / c,
             "rel_diff_hf": abs(a - b) / b} for i, (a, c, b) in enumerate(zip(u, r, h))]
    print_table(rows[:3] + rows[len(rows) // 2: len(rows) // 2 + 2] + rows[-3:],
                ["step", "nbkit", "raw", "hf", "rel_diff_raw", "rel_diff_hf"])
    write_summary(args, rows)


def write_summary(args, rows) -> None:
    def compare(key):
        worst = max(rows, key=lambda row: row[key])
        return {"max_rel_diff": worst[key], "worst_step": worst["step"], "tolerance_rel": TOLERANCE,
                "within_tolerance": worst[key] <= TOLERANCE}

    summary = {"steps": len(rows), "nbkit_vs_raw_unsloth": compare("rel_diff_raw"),
               "unsloth_vs_transformers": compare("rel_diff_hf"),
               "loss_first_last": {k: [rows[0][k], rows[-1][k]] for k in ("nbkit", "raw", "hf")}}
    print(json.dumps(summary, indent=1))
    write_json(f"loss_parity_{args.arch}_{args.quant}.json", {"args": vars(args), "summary": summary, "rows": rows})

if __name__ == "__main__":
    main()
