"""Memory while the model loads, per quantization, against nbkit.planning.memory.load_peak's prediction.

python bench/load_peak.py --arch 8b --quant 4bit,16bit,fp8
One process per quantization, run side by side (each process's peaks are its own; only memory is measured):
nbkit.loading.models.load on a bf16 checkpoint of the architecture (random weights), then torch's reserved and allocated
peaks since the process started. FP8 from a bf16 checkpoint loads the whole model in bf16 and writes an FP8
copy to disk, so that copy's size is recorded too. Writes bench/results/load_peak_<arch>.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common import emit, print_table, random_model, scratch_dir, write_json


def one(args) -> dict:
    from nbkit.loading import backend

    backend.ensure()
    import torch

    from nbkit.planning import memory
    from nbkit.loading import models
    from nbkit.planning.config import RunConfig
    from nbkit.specs import spec_for

    path = random_model(args.arch)
    cfg = RunConfig(model=path, quantization=args.quant, max_seq_length=2048, batch_size=1,
                    output_dir=scratch_dir("load"))
    start = time.perf_counter()
    models.load(cfg, check_memory=False)
    torch.cuda.synchronize()
    part = memory.estimate(cfg, spec_for(path))
    return {"arch": args.arch, "quant": args.quant, "seconds": time.perf_counter() - start,
            "measured_reserved_gib": torch.cuda.max_memory_reserved() / 1024**3,
            "measured_allocated_gib": torch.cuda.max_memory_allocated() / 1024**3,
            "predicted_load_gib": part.load, "predicted_weights_gib": part.weights, "note": part.load_note}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arch", default="8b")
    ap.add_argument("--quant", default="4bit,16bit,fp8")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        emit(one(args))
        return
    random_model(args.arch)  # built once, before the loaders start
    procs = {q: subprocess.Popen([sys.executable, __file__, "--arch", args.arch, "--quant", q, "--one"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for q in args.quant.split(",")}
    rows = []
    for q, p in procs.items():
        out, _ = p.communicate(timeout=500)
        found = [line[7:] for line in out.splitlines() if line.startswith("RESULT ")]
        if not found:
            print(out[-2000:])
        rows.append(json.loads(found[0]) if found else {"arch": args.arch, "quant": q, "error": "no result"})
    for r in rows:
        if "predicted_load_gib" in r:
            r["predicted_vs_allocated"] = r["predicted_load_gib"] / r["measured_allocated_gib"] - 1
    print_table(rows, ["quant", "seconds", "measured_reserved_gib", "measured_allocated_gib", "predicted_load_gib",
                       "predicted_vs_allocated"])
    write_json(f"load_peak_{args.arch}.json", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
