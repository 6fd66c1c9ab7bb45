"""Predicted vs measured peak VRAM of nbkit training runs (issue: memory model accuracy).

On a GPU:  python bench/memory_accuracy.py --arch 1b,8b --quant 4bit,16bit,fp8
  trains a few steps per (arch, quantization, sequence length, batch) on random-weight models of the
  real architectures and records torch.cuda.max_memory_reserved next to nbkit.planning.memory.estimate().
Anywhere:  python bench/memory_accuracy.py --report bench/results/memory_accuracy.json
  re-prints the table with predictions from the current nbkit.planning.memory constants (measurements unchanged).
Target: every configuration within ±10%, and no under-prediction.
"""
from __future__ import annotations

import argparse
import json
import time

from common import (RESULTS, free_cuda, scratch_dir, gpu_used_gib, print_table, random_model, step_timer, synthetic_data,
                    write_json)

DEFAULT_SHAPES = "512x1,512x8,1024x4,2048x1,2048x4,4096x2,4096x8"
COLS = ["arch", "backend", "quant", "gc", "seq", "batch", "predicted_gib", "measured_gib", "error_pct",
        "weights_gib", "tok_s_steady"]


def predict(rec: dict) -> dict:
    from nbkit.planning.config import RunConfig
    from nbkit.planning.memory import estimate
    from nbkit.specs import from_config_dict

    spec = from_config_dict(rec["spec"], rec["arch"])
    cfg = RunConfig(model=rec["arch"], quantization=rec["quant"], max_seq_length=rec["seq"],
                    batch_size=rec["batch"], lora_r=rec["lora_r"], gradient_checkpointing=rec["gc"])
    part = estimate(cfg, spec, rec["backend"], on_cuda=True)
    measured = rec["measured_reserved_gib"]
    return {**rec, "predicted_gib": part.reserved, "predicted_total_gib": part.total,
            "measured_gib": measured, "error_pct": 100.0 * (part.reserved - measured) / measured,
            "breakdown": part.as_dict()}


def measure_isolated(args) -> list[dict]:
    """One child process per (arch, quantization): a process that loaded one model keeps part of it
    allocated after `del`, which would inflate the next model's reading."""
    import subprocess
    import sys

    records = []
    for arch in args.arch.split(","):
        for quant in args.quant.split(","):
            out = f"_part_{arch}_{quant}.json"
            cmd = [sys.executable, __file__, "--arch", arch, "--quant", quant, "--shapes", args.shapes,
                   "--steps", str(args.steps), "--backend", args.backend, "--out", out, "--in-process"]
            cmd += ["--no-gc-too"] if args.no_gc_too else []
            cmd += ["--shared-gpu"] if args.shared_gpu else []
            try:
                subprocess.run(cmd, timeout=args.part_timeout)
            except subprocess.TimeoutExpired:  # keep the shapes it measured (written as it goes), go on
                print(f"[{arch} {quant}] timed out after {args.part_timeout}s", flush=True)
            part = RESULTS / out
            if part.exists():
                records += json.loads(part.read_text())["records"]
                part.unlink()
                write_json(args.out, {"records": records})
    return records


def measure(args) -> list[dict]:
    from nbkit.loading import backend

    name = backend.ensure(args.backend)
    import torch

    from nbkit.loading import models
    from nbkit.training import train
    from nbkit.planning.config import RunConfig
    from common import plain_spec as spec_for

    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    records = []
    loads = 0
    for arch in args.arch.split(","):
        path = random_model(arch)
        spec = spec_for(path)
        for quant in args.quant.split(","):
            for gc_on in ([True, False] if args.no_gc_too else [True]):
                free_cuda()
                cfg = RunConfig(model=path, quantization=quant, max_seq_length=max(s for s, _ in shapes),
                                lora_r=16, lora_alpha=16, max_steps=args.steps, warmup_steps=0, save_steps=0,
                                output_dir=f"/tmp/nbkit-mem/{arch}-{quant}", gradient_checkpointing=gc_on,
                                backend=name)
                t = time.time()
                load_index = loads
                loads += 1
                loaded = models.load(cfg, check_memory=False)
                weights = torch.cuda.memory_allocated() / 1024**3
                print(f"[load] {arch} {quant} gc={gc_on}: {weights:.2f} GiB allocated, {time.time() - t:.0f}s",
                      flush=True)
                for seq, batch in shapes:
                    if not gc_on and seq * batch > args.no_gc_max_tokens:
                        continue
                    free_cuda()
                    loaded.config = cfg.replace(max_seq_length=seq, batch_size=batch, grad_accum=1)
                    data = synthetic_data(batch * args.steps, seq)
                    timer = step_timer()
                    try:
                        res = train.run(loaded, data, [timer], output_dir=scratch_dir("mem"))
                        status = "ok"
                    except Exception as exc:  # an OOM at a large shape is a data point, not a crash
                        status, res = f"error: {type(exc).__name__}: {str(exc)[:200]}", None
                    rec = {"arch": arch, "backend": name, "quant": quant, "gc": gc_on, "seq": seq, "batch": batch,
                           "load_index": load_index,
                           "lora_r": 16, "status": status, "spec": vars(spec) | {"name": arch},
                           "weights_gib": weights,
                           "measured_reserved_gib": torch.cuda.max_memory_reserved() / 1024**3,
                           "measured_allocated_gib": torch.cuda.max_memory_allocated() / 1024**3,
                           "gpu_used_gib": gpu_used_gib(),
                           "tok_s": res.tokens_per_second if res else None,
                           "gpu": torch.cuda.get_device_name(), "shared_gpu": args.shared_gpu}
                    rec["context_gib"] = rec["gpu_used_gib"] - torch.cuda.memory_reserved() / 1024**3
                    rec["step_seconds"] = timer.steady()
                    rec["tok_s_steady"] = (batch * seq / rec["step_seconds"]) if rec["step_seconds"] else None
                    records.append(rec)
                    write_json(args.out, {"records": records})  # a time-out keeps what was measured
                    print(json.dumps({k: rec[k] for k in ("arch", "quant", "gc", "seq", "batch", "status",
                                                          "measured_reserved_gib", "tok_s_steady")}),
                          flush=True)
                del loaded
                free_cuda()
    return records


def with_load_index(records: list[dict]) -> list[dict]:
    """Older files lack load_index: within one file, loads happened in order of first appearance."""
    order: dict = {}
    for r in records:
        key = (r["arch"], r["quant"], r["gc"])
        order.setdefault(key, len(order))
        r.setdefault("load_index", order[key])
    return records


def saved_records(results=RESULTS) -> list[dict]:
    """Every usable record saved in `results`: measured without error, by the first model loaded in its process."""
    records = []
    for path in sorted(results.glob("mem*_*.json")):
        if not path.stem.endswith("_report"):
            records += with_load_index(json.loads(path.read_text())["records"])
    return [r for r in records if r["status"] == "ok" and r["load_index"] == 0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="1b")
    ap.add_argument("--quant", default="4bit,16bit,fp8")
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help="seq x batch, comma separated")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--no-gc-too", action="store_true", help="also measure without gradient checkpointing")
    ap.add_argument("--no-gc-max-tokens", type=int, default=8192)
    ap.add_argument("--out", default="memory_accuracy.json")
    ap.add_argument("--report", nargs="*", help="re-predict saved measurement files instead of measuring")
    ap.add_argument("--in-process", action="store_true", help="measure every combination in this process")
    ap.add_argument("--part-timeout", type=int, default=300)
    ap.add_argument("--shared-gpu", action="store_true",
                    help="other jobs use the GPU meanwhile: memory readings hold, speeds are marked unusable")
    args = ap.parse_args()
    if args.report is not None:
        raw = []
        for path in args.report or [str(RESULTS / args.out)]:
            raw += with_load_index(json.load(open(path))["records"])
    else:
        raw = measure(args) if args.in_process else measure_isolated(args)
    if args.in_process:  # a child: the parent reports
        write_json(args.out, {"records": raw})
        return
    second = [r for r in raw if r.get("load_index", 0) > 0]
    rows = [predict(r) for r in raw if r["status"] == "ok" and r.get("load_index", 0) == 0]
    if second:
        print(f"left out {len(second)} record(s) of a second model loaded in one process (memory held over)")
    print_table(rows, COLS)
    worst = max(abs(r["error_pct"]) for r in rows)
    under = [r for r in rows if r["error_pct"] < 0]
    print(f"\n{len(rows)} configurations; worst |error| {worst:.1f}%; under-predictions: {len(under)}")
    if args.report is None:
        write_json(args.out, {"records": raw})
    write_json(args.out.replace(".json", "_report.json"),
               {"rows": [{k: r[k] for k in COLS + ["predicted_total_gib", "breakdown", "gpu"] if k in r} for r in rows],
                "worst_abs_error_pct": worst, "under_predictions": len(under)})


if __name__ == "__main__":
    main()
