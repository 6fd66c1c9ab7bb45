"""workflow.run(probe=True) on a GPU: a batch predicted not to fit the tier is replaced by the largest that trains.

python bench/probe_fallback.py --arch 1b --quant 4bit --tier 8GB --batch 32 --seq 2048
Caps memory to the tier, asks for a batch beyond it, and runs the whole workflow (shipped data, a few steps).
Writes bench/results/probe_fallback_<arch>_<quant>.json.
"""
from __future__ import annotations

from common import random_model, run_parser, scratch_dir, write_json


def main() -> None:
    ap = run_parser(__doc__, steps=3, batch=32, quant="4bit")
    ap.add_argument("--tier", default="8GB")
    args = ap.parse_args()
    from nbkit.loading import backend

    backend.ensure()
    from nbkit.planning import hardware
    from nbkit import workflow
    from nbkit.planning.config import RunConfig

    hardware.cap_memory(hardware.TIERS[args.tier])
    cfg = RunConfig(model=random_model(args.arch), quantization=args.quant, max_seq_length=args.seq,
                    batch_size=args.batch, grad_accum=1, max_steps=args.steps, save_steps=0,
                    output_dir=scratch_dir("probe-fallback"))
    report = workflow.run(cfg, probe=True, max_new_tokens=4)
    print(report.summary())
    write_json(f"probe_fallback_{args.arch}_{args.quant}.json", {
        "args": vars(args), "notes": report.notes, "trained_batch": report.config.batch_size,
        "trained_grad_accum": report.config.grad_accum, "steps": report.train.steps,
        "peak_vram_gib": report.train.peak_vram_gib, "adapters_changed": report.verify.ok})


if __name__ == "__main__":
    main()
