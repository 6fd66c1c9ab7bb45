"""Data-parallel scaling: tokens/s of the same per-GPU run on 1 GPU and on N GPUs (torchrun, NCCL).

python bench/ddp_scaling.py --arch 1b --quant 16bit --seq 2048 --batch 4 --steps 12 --gpus 1,2 [--repeats 2]
Each rank runs nbkit.loading.models.load + nbkit.training.train.run (rank 0 shows progress) on synthetic rows of exactly `seq`
tokens, so every step is N x batch x seq tokens; speed is rank 0's median synchronised step time after 2
warm-up steps. With --repeats the GPU counts alternate (1, 2, 1, 2, ...), one torchrun each; the scaling is the
ratio of the medians over repeats, with the range of the per-repeat ratios and the range the 10th-90th percentile
steps allow beside it: a claim must be larger than that spread. Then (unless --no-workflow)
`torchrun -m nbkit train --config` runs the real workflow on the largest N (shipped data, one adapter saved, ranks
checked identical). If Unsloth fails under DDP the same is tried with NBKIT_BACKEND=transformers, and the JSON
says which backend ran.
Writes bench/results/ddp_scaling_<arch>_<quant><tag>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from common import child_result, emit, print_table, random_model, run_parser, step_timer, synthetic_data, write_json

# multicast (NVLS) can take a shared host's GPUs out of service: keep it off in every process we start
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def worker(args) -> None:
    from nbkit.loading import backend

    name = backend.ensure()
    import torch

    from nbkit.gpus import distributed
    from nbkit.loading import models
    from nbkit.training import train
    from nbkit.planning.config import RunConfig
    from nbkit.ui.progress import TrainingProgress

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = RunConfig(model=args.model, quantization=args.quant, max_seq_length=args.seq, batch_size=args.batch,
                    grad_accum=1, max_steps=args.steps, save_steps=0, save_minutes=0,
                    output_dir=args.run_dir)  # one folder per launch: nbkit refuses to train into another run's
    loaded = models.load(cfg, check_memory=False)
    data = synthetic_data(args.batch * args.steps * world, args.seq)
    timer = step_timer()
    views = [TrainingProgress()] if distributed.is_main() else []
    result = train.run(loaded, data, [timer, *views], claim=distributed.is_main())  # rank 0 writes
    peaks = distributed.gather(torch.cuda.max_memory_reserved() / 1024**3)
    devices = distributed.gather(str(next(loaded.model.parameters()).device))
    if distributed.is_main():
        step = timer.steady()
        emit({
            # global: every GPU trains batch x seq tokens a step (uniform rows), timed on rank 0
            "gpus": world, "backend": name, "median_step_s": step, "tokens_per_s": world * args.batch * args.seq / step,
            "tokens_per_s_per_gpu": args.batch * args.seq / step, "tokens_per_s_is": "global, all GPUs",
            "peak_gib_per_rank": peaks, "devices": devices, "final_loss": result.final_loss,
            "step_times": timer.times})


def torchrun(n: int, module_args: list[str], env: dict, timeout: int) -> tuple[int, dict | None, str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
           str(29500 + n)] + module_args
    return child_result(cmd, timeout, env)


def main() -> None:
    ap = run_parser(__doc__, steps=12)
    ap.add_argument("--gpus", default="1,2")
    ap.add_argument("--backends", default="unsloth,transformers")
    ap.add_argument("--repeats", type=int, default=1, help="alternate the GPU counts this many times")
    ap.add_argument("--timeout", type=int, default=240)
    ap.add_argument("--no-workflow", action="store_true", help="skip the torchrun -m nbkit train check")
    ap.add_argument("--tag", default="", help="suffix of the result file's name")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    os.environ.update(SAFE_ENV)
    model = random_model(args.arch)
    rows, e2e = [], None
    name = f"ddp_scaling_{args.arch}_{args.quant}{args.tag}.json"
    counts = [int(x) for x in args.gpus.split(",")]
    for backend in args.backends.split(","):
        env = {**os.environ, **SAFE_ENV, "NBKIT_BACKEND": backend}
        ok = True
        for repeat in range(args.repeats):
            for n in counts:
                rc, found, out = torchrun(n, [__file__, "--worker", "--model", model, "--arch", args.arch,
                                              "--quant", args.quant, "--seq", str(args.seq), "--batch",
                                              str(args.batch), "--steps", str(args.steps), "--run-dir",
                                              f"/tmp/ddp_bench-{backend}-{n}gpu-{repeat}"], env, args.timeout)
                if rc != 0 or not found:
                    print(out[-4000:])
                    rows.append({"gpus": n, "backend": backend, "error": f"rc={rc}", "tail": out[-1500:]})
                    ok = False
                    break
                rows.append({**found, "repeat": repeat})
                print(f"[{backend}] {n} GPU(s), repeat {repeat + 1}: {found['tokens_per_s']:,.0f} tok/s", flush=True)
                write_json(name, {"args": vars(args), "rows": rows})
            if not ok:
                break
        if ok:
            if not args.no_workflow:
                e2e = run_workflow(model, args, env, max(counts))
            break  # the first backend that works is the one reported
    good = [r for r in rows if "tokens_per_s" in r]
    for r in good:  # the spread of the steady steps: a scaling claim must be larger than it
        r.update(step_spread([r]))
    summary = summarise(good)
    scaling = scaling_of(good, summary)
    print_table(good, ["gpus", "repeat", "backend", "median_step_s", "tokens_per_s", "step_p10_s", "step_p90_s"])
    print(f"scaling: {scaling}")
    write_json(name, {"args": vars(args), "rows": rows, "summary": summary, **scaling, "workflow": e2e})


def step_spread(runs: list[dict]) -> dict:
    """The 10th and 90th percentile of the runs' steps after the 2 warm-up steps of each, pooled, and how many."""
    steady = sorted(t for r in runs for t in r["step_times"][2:])
    return {"step_p10_s": steady[len(steady) // 10], "step_p90_s": steady[(9 * len(steady)) // 10],
            "steady_steps": len(steady)}


def summarise(good: list[dict]) -> list[dict]:
    """Per GPU count over its repeats: median tokens/s and step, their min-max, and the pooled 10th-90th
    percentile step."""
    out = []
    for n in dict.fromkeys(r["gpus"] for r in good):
        runs = [r for r in good if r["gpus"] == n]
        tps = [r["tokens_per_s"] for r in runs]
        out.append({"gpus": n, "repeats": len(runs), "tokens_per_s": statistics.median(tps),
                    "tokens_per_s_range": [min(tps), max(tps)],
                    "median_step_s": statistics.median(r["median_step_s"] for r in runs), **step_spread(runs)})
    return out


def scaling_of(good: list[dict], summary: list[dict]) -> dict:
    """N-GPU over 1-GPU tokens/s: by the medians, per repeat (each N-GPU run against the 1-GPU run before it),
    and the range the pooled 10th-90th percentile steps allow."""
    if len(summary) < 2:
        return {"scaling": None, "scaling_per_repeat": [], "scaling_p10_p90": None}
    one, many = summary[0], summary[-1]
    per_step = many["gpus"] / one["gpus"]  # N GPUs train N times the tokens of one step
    by_repeat = {}
    for r in good:
        by_repeat.setdefault(r.get("repeat", 0), {})[r["gpus"]] = r["tokens_per_s"]
    return {"scaling": many["tokens_per_s"] / one["tokens_per_s"],
            "scaling_per_repeat": [t[many["gpus"]] / t[one["gpus"]] for t in by_repeat.values()
                                   if one["gpus"] in t and many["gpus"] in t],
            "scaling_p10_p90": [per_step * one["step_p10_s"] / many["step_p90_s"],
                                per_step * one["step_p90_s"] / many["step_p10_s"]]}


def run_workflow(model: str, args, env: dict, n: int) -> dict:
    """The user's path: `torchrun -m nbkit train --config run.yaml` on the shipped data."""
    from nbkit.planning.config import RunConfig

    out = Path("/tmp/ddp_workflow")
    cfg = RunConfig(model=model, quantization=args.quant, max_seq_length=512, batch_size=4, grad_accum=1,
                    max_steps=30, save_steps=0, output_dir=str(out))
    path = cfg.save("/tmp/ddp_run.yaml")
    rc, _, text = torchrun(n, ["-m", "nbkit", "train", "--config", str(path)], env, args.timeout)
    print(text[-2500:])
    report_file = out / "nbkit_report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else {}
    return {"rc": rc, "world_size": report.get("world_size"), "ranks_agree": report.get("ranks_agree"),
            "adapters_changed": report.get("adapters_changed"), "loss_first_last":
            [report["losses"][0][1], report["losses"][-1][1]] if report.get("losses") else None,
            "saved": sorted(p.name for p in out.iterdir()) if out.exists() else [],
            "per_gpu_line": [l for l in text.splitlines() if "GPU0" in l][-1:]}


if __name__ == "__main__":
    main()
