"""Largest batch per tier: predicted by nbkit.planning.memory.largest_batch, then confirmed and pushed by a probe run.

python bench/largest_batch.py --arch 8b --quant 4bit --tiers 16GB,24GB --seq 2048
One process, one model: the tiers are tried smallest first, each under its cap
(torch.cuda.set_per_process_memory_fraction). For each tier nbkit.training.probe.probe_batch trains 3 steps on rows of
exactly `seq` tokens at the predicted batch, then at batches 25% larger until one runs out of memory (at most
`--max-up` times), or steps down if the prediction itself does not train. Throughput is the median
synchronised step time at each batch that trained. Writes bench/results/largest_batch_<arch>_<quant>.json.
"""
from __future__ import annotations

import argparse

from common import print_table, random_model, write_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="1b")
    ap.add_argument("--quant", default="4bit")
    ap.add_argument("--tiers", default="8GB")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-up", type=int, default=2)
    args = ap.parse_args()
    from nbkit.loading import backend

    name = backend.ensure()
    from nbkit.planning import hardware, memory
    from nbkit.loading import models
    from nbkit.training import probe
    from nbkit.planning.config import RunConfig
    from nbkit.specs import spec_for

    path = random_model(args.arch)
    spec = spec_for(path)
    rows, loaded = [], None
    for tier in args.tiers.split(","):
        # a tier as large as the card (H100 on an H100) is the card itself: nothing to cap
        card = hardware.check_gpu()
        cap = hardware.TIERS[tier]
        gpu = hardware.cap_memory(cap) if cap < card.total_gib else card
        cfg = RunConfig(model=path, quantization=args.quant, max_seq_length=args.seq, batch_size=1, grad_accum=1,
                        save_steps=0, output_dir="/tmp/lb")
        predicted = memory.largest_batch(cfg, spec, gpu, name)
        print(f"[{tier}] predicted largest batch {predicted} at {args.seq} tokens", flush=True)
        if loaded is None:
            loaded = models.load(cfg.replace(batch_size=max(1, predicted)), gpu=gpu, check_memory=False)

        def report(batch, ok, peak, secs, tier=tier, predicted=predicted):
            row = {"tier": tier, "arch": args.arch, "quant": args.quant, "seq": args.seq, "predicted": predicted,
                   "batch": batch, "trained": ok, "peak_gib": peak, "cap_gib": gpu.usable_gib,
                   "step_s": secs, "tokens_per_s": batch * args.seq / secs if secs else None,
                   "predicted_peak_gib": memory.estimate(cfg, spec, name, batch_size=batch).reserved}
            print(row, flush=True)
            rows.append(row)
            write_json(f"largest_batch_{args.arch}_{args.quant}.json", {"args": vars(args), "rows": rows})

        result = probe.probe_batch(loaded, predicted, steps=args.steps, grow=0.25, max_up=args.max_up,
                                   on_result=report)
        print(f"[{tier}] {result.summary()}", flush=True)
    print_table(rows, ["tier", "predicted", "batch", "trained", "predicted_peak_gib", "peak_gib", "cap_gib",
                       "tokens_per_s"])


if __name__ == "__main__":
    main()
