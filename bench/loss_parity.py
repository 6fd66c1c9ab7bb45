"""Loss parity: Unsloth vs transformers + peft on the same seed, data and LoRA initialisation.

python bench/loss_parity.py --arch 1b --quant 16bit --steps 50 --batch 4 --seq 512
Both runs go through nbkit (backend 'unsloth' vs 'transformers', each in its own process so the baseline
never imports Unsloth) on the shipped instruction data with completion-only labels. The LoRA A matrices are
re-initialised from one seeded generator in both (B starts at zero), so the runs start from identical
weights and see the same batches in the same order; what differs is the kernels (Unsloth's fused attention,
RoPE, cross-entropy and checkpointing vs PyTorch's). Tolerance: every step within 2% relative loss.
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
    from nbkit import backend

    backend.ensure()
    from nbkit import data, models, train
    from nbkit.config import RunConfig

    cfg = RunConfig(model=random_model(args.arch), quantization=args.quant, max_seq_length=args.seq,
                    batch_size=args.batch, grad_accum=1, max_steps=args.steps, learning_rate=2e-4, warmup_steps=5,
                    save_steps=0, lora_dropout=0.0, output_dir=scratch_dir(f"parity-{args.backend}"))
    loaded = models.load(cfg, check_memory=False)
    touched = reinit_lora(loaded.model, seed=1234)
    prepared = data.prepare(cfg, loaded.tokenizer)
    result = train.run(loaded, prepared, progress=False)
    return {"backend": args.backend, "lora_tensors": touched, "losses": [l for _, l in result.losses],
            "tokens": result.tokens}


def main() -> None:
    ap = run_parser(__doc__, steps=50, seq=512)
    ap.add_argument("--backend", help=argparse.SUPPRESS)  # internal: one backend in this process
    args = ap.parse_args()
    if args.backend:
        emit(one_backend(args))
        return
    runs = {}
    for b in ("unsloth", "transformers"):
        cmd = [sys.executable, __file__, "--arch", args.arch, "--quant", args.quant, "--steps", str(args.steps),
               "--batch", str(args.batch), "--seq", str(args.seq), "--backend", b]
        _, found, out = child_result(cmd, 400)
        if not found:
            print(out[-3000:])
            raise SystemExit(f"{b}: no result")
        runs[b] = found
    u, h = runs["unsloth"]["losses"], runs["transformers"]["losses"]
    rows = [{"step": i + 1, "unsloth": a, "hf": b, "abs_diff": abs(a - b), "rel_diff": abs(a - b) / b}
            for i, (a, b) in enumerate(zip(u, h))]
    worst = max(rows, key=lambda r: r["rel_diff"])
    summary = {"steps": len(rows), "max_abs_diff": max(r["abs_diff"] for r in rows),
               "max_rel_diff": worst["rel_diff"], "worst_step": worst["step"],
               "mean_abs_diff": sum(r["abs_diff"] for r in rows) / len(rows), "tolerance_rel": TOLERANCE,
               "within_tolerance": worst["rel_diff"] <= TOLERANCE, "same_tokens": runs["unsloth"]["tokens"] ==
               runs["transformers"]["tokens"], "loss_first_last": {"unsloth": [u[0], u[-1]], "hf": [h[0], h[-1]]}}
    print_table(rows[:3] + rows[len(rows) // 2: len(rows) // 2 + 2] + rows[-3:],
                ["step", "unsloth", "hf", "abs_diff", "rel_diff"])
    print(json.dumps(summary, indent=1))
    write_json(f"loss_parity_{args.arch}_{args.quant}.json", {"args": vars(args), "summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
