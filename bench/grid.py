"""Does what recommend() picks load and train on real cards, with real data? The memory grid.

python bench/grid.py [--archs 1b,8b,...] [--cards "RTX 4060 8GB,T4,..."] [--quants 4bit,16bit] [--tag _a]
For every (architecture, card) pair: nbkit.planning.recommend() for the card as nbkit plans it (planned_gpu: the memory
the driver reports minus the CUDA context and display, its bf16 and FP8), then, in a process of its own that
rehearses the card (cards.emulate: torch may reserve only the card's usable memory; fp16 where it has no bf16):
  1. nbkit.loading.models.load with the recommended settings (the memory check on): the load phase's peaks;
  2. nbkit.training.probe.probe_batch at the recommended batch on rows of exactly max_seq_length tokens: the worst case
     the plan is for;
  3. nbkit.training.train.run on real-length rows (lognormal lengths, median 400 tokens, some cut at max_seq_length):
     peaks, OOM recoveries, and the most tokens one micro-batch held.
Each phase's allocated and reserved peaks are written beside the prediction for it. Pairs whose settings are the
same (same model, settings and precision) run once, under the smallest of their cards. Several processes share
the GPU (each process's cap and peaks are its own; only memory is measured, never speed). Checkpoints are random
weights of the real architecture: pre-quantized ("-bnb-4bit", as Unsloth's uploads) for 4-bit runs of models
of 7B and up, bf16 otherwise (16-bit, FP8 from bf16, and 4-bit quantized while loading).
Writes bench/results/grid<tag>.json; tests/test_memory_grid.py re-checks it against the current formulas.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import (ARCHS, RESULTS, emit, mixed_data, prequantized_model, prequantized_path, print_table,
                    random_model, random_model_path, scratch_dir, write_json)

GRID_ARCHS = ["1b", "3b", "8b", "qwen2.5-7b", "qwen2.5-14b", "qwen3-8b", "mistral-7b", "gemma2-9b", "phi3.5"]
# 8, 12, 16 GB without FP8 or bf16 (Colab's T4), 16 GB with FP8, 24 GB
GRID_CARDS = ["RTX 4060 8GB", "RTX 3060 12GB", "T4", "RTX 4060 Ti 16GB", "RTX 4090 24GB"]
# 4-bit runs of these load a bf16 checkpoint and quantize it while loading; bigger ones load a pre-quantized one
QUANTIZED_WHILE_LOADING = {"1b", "3b", "phi3.5"}


def plan(arch: str, card: str) -> dict:
    from nbkit.planning.cards import planned_gpu
    from nbkit.planning.recommend import recommend
    from common import plain_spec as spec_for

    gpu = planned_gpu(card)
    rec = recommend(spec_for(ARCHS[arch]), gpu)
    return {"arch": arch, "model": ARCHS[arch], "card": card, "usable_gib": gpu.usable_gib, "bf16": gpu.bf16,
            "fits": rec.fits, "config": rec.config.to_dict(), "reason": rec.reason,
            "predicted": rec.breakdown.as_dict()}


def checkpoint(arch: str, quant: str) -> tuple[str, str]:
    """(kind, path) of the checkpoint a run loads."""
    if quant == "4bit" and arch not in QUANTIZED_WHILE_LOADING:
        return "bnb-4bit", str(prequantized_path(arch, storage="uint8"))
    return "bf16", str(random_model_path(arch))


def build(arch: str, kind: str, for_fp8: bool = False) -> None:
    """Build one checkpoint once the disk has room for it (and for the FP8 copy, when an FP8 run converts it;
    FP8 runs delete both after loading)."""
    from nbkit.planning.fp8 import fp8_copy_gib
    from common import plain_spec as spec_for

    spec = spec_for(ARCHS[arch])
    need = 2.0 * spec.total_params if kind == "bf16" else 0.52 * spec.linear_params + 2.0 * spec.embedding_params
    need += fp8_copy_gib(spec) * 1024**3 * 1.1 if for_fp8 else 0
    waited = time.time()
    while shutil.disk_usage("/tmp").free < need + 6 * 1024**3 and time.time() - waited < 400:
        time.sleep(5)
    target = prequantized_path(arch, storage="uint8") if kind == "bnb-4bit" else random_model_path(arch)
    existed = (target / "config.json").exists()
    path = prequantized_model(arch, storage="uint8") if kind == "bnb-4bit" else random_model(arch)
    if not existed:  # only what the grid built is deleted when its runs are done
        Path(path, BUILT_HERE).touch()
    Path(path, ".built").touch()


BUILT_HERE = ".built-by-grid"


def drop(path: str) -> None:
    """Delete a checkpoint the grid built (for the disk's room); one that was there before is kept."""
    if Path(path, BUILT_HERE).exists():
        shutil.rmtree(path, ignore_errors=True)


def one(task: dict) -> dict:
    """Load, probe and train one recommended setting on a rehearsal of task['card']."""
    from nbkit.loading import backend

    backend.ensure()
    import torch

    from nbkit.loading import models
    from nbkit.training import train
    from nbkit.planning.cards import emulate
    from nbkit.planning.config import RunConfig
    from nbkit.training.probe import probe_batch
    from nbkit.planning.recommend import recommend
    from common import plain_spec as spec_for

    gpu = emulate(task["card"])
    spec = spec_for(task["model"])
    rec = recommend(spec, gpu)  # on the rehearsed card, as a user's notebook would
    planned = RunConfig.from_dict(task["config"])
    same = rec.config.replace(output_dir=planned.output_dir) == planned  # the default folder is named by the time
    out = {"recommended_on_device": rec.config.to_dict(), "same_as_planned": same}
    cfg = rec.config.replace(model=task["path"], output_dir=scratch_dir("grid"), max_steps=task["steps"],
                             save_steps=0, warmup_steps=0)
    t = time.perf_counter()
    loaded = models.load(cfg)
    torch.cuda.synchronize()
    if cfg.quantization == "fp8":  # loaded: the bf16 checkpoint and the FP8 copy are no longer read
        out["fp8_copies"] = [str(p) for p in Path("/tmp").glob("unsloth-fp8-*/*")]
        drop(task["path"])
        for copy in Path("/tmp").glob(f"unsloth-fp8-*/*{Path(task['path']).name}*"):
            shutil.rmtree(copy, ignore_errors=True)
    out.update(load_seconds=time.perf_counter() - t, bf16=gpu.bf16,
               load_allocated_gib=torch.cuda.max_memory_allocated() / 1024**3,
               load_reserved_gib=torch.cuda.max_memory_reserved() / 1024**3)
    probe = probe_batch(loaded, cfg.batch_size, steps=2)  # resets the peaks before its try
    out.update(probe_trained=probe.largest >= cfg.batch_size, probe_largest=probe.largest,
               probe_allocated_gib=torch.cuda.max_memory_allocated() / 1024**3,
               probe_reserved_gib=torch.cuda.max_memory_reserved() / 1024**3)
    seen: list[int] = []
    shapes: set[tuple] = set()  # (rows, length) of each micro-batch: one row of several samples = padding-free

    def count(module, inputs):
        seen.append(inputs[0].numel())
        shapes.add(tuple(inputs[0].shape))

    hook = loaded.model.get_input_embeddings().register_forward_pre_hook(count)
    rows = cfg.max_steps * cfg.batch_size * cfg.grad_accum + 64
    result = train.run(loaded, mixed_data(rows, cfg.max_seq_length))
    hook.remove()
    losses = [v for _, v in result.losses]
    most = max(seen) if seen else 0
    out.update(train_allocated_gib=result.peak_allocated_gib, train_reserved_gib=result.peak_vram_gib,
               steps=result.steps, notes=result.notes, losses_finite=all(v == v and abs(v) < 1e4 for v in losses),
               first_loss=losses[0] if losses else None, most_tokens_per_micro_batch=most, tokens=result.tokens, padding_free=all(shape[0] == 1 for shape in shapes) or cfg.batch_size == 1)
    return out


def tasks_for(plans: list[dict], steps: int) -> list[dict]:
    """One task per distinct (model, settings, precision), run under the smallest card that shares it."""
    groups: dict[str, dict] = {}
    usable = {p["card"]: p["usable_gib"] for p in plans}
    for p in plans:
        if not p["fits"]:
            continue
        key = json.dumps([p["arch"], p["config"], p["bf16"]], sort_keys=True)
        g = groups.setdefault(key, {"arch": p["arch"], "model": p["model"], "config": p["config"],
                                    "cards": [], "steps": steps})
        g["cards"].append(p["card"])
        g["card"] = min(g["cards"], key=lambda c: usable[c])
        g["peak_gib"] = p["predicted"]["peak_total"]
    for g in groups.values():
        g["checkpoint"], g["path"] = checkpoint(g["arch"], g["config"]["quantization"])
    return sorted(groups.values(), key=lambda g: -g["peak_gib"])


def gpu_total_gib() -> float:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", "0"],
                         capture_output=True, text=True).stdout
    return float(out.split()[0]) / 1024


def run_all(tasks: list[dict], args) -> list[dict]:
    """Build checkpoints one after another on a side process; start each task once its checkpoint is built and
    the GPU has room for its predicted peak (plus headroom), at most --procs at a time."""
    # small checkpoints first; an FP8 run's bf16 checkpoint needs room for its FP8 copy too (deleted after loading)
    fp8 = {t["path"] for t in tasks if t["config"]["quantization"] == "fp8"}
    builds = sorted(dict.fromkeys((t["arch"], t["checkpoint"], t["path"] in fp8) for t in tasks), key=lambda b: b[2])
    builder = subprocess.Popen([sys.executable, __file__, "--build", json.dumps(builds)])
    budget = gpu_total_gib() - args.builder_gib
    waiting, running, done = list(tasks), {}, []
    logs = Path(scratch_dir("grid-logs"))
    start = time.time()
    while waiting or running:
        if waiting and time.time() - start > args.start_within:
            print(f"[grid] {len(waiting)} tasks not started within {args.start_within}s", flush=True)
            done += [{**t, "error": "not started: out of time"} for t in waiting]
            waiting = []
        for proc, (task, started, log) in list(running.items()):
            if proc.poll() is None and time.time() - started < args.part_timeout:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            text = log.read_text(errors="replace")
            found = [json.loads(x[7:]) for x in text.splitlines() if x.startswith("RESULT ")]
            rec = {**task, **(found[0] if found else {"error": _last_error(text), "rc": proc.returncode})}
            rec["seconds"] = time.time() - started
            done.append(rec)
            del running[proc]
            print(f"[grid] {task['arch']} on {task['card']}: {'ok' if found else 'FAILED'} "
                  f"({rec['seconds']:.0f}s)", flush=True)
            if not found:
                print(text[-1500:], flush=True)
            if os.environ.get("OUT"):  # every child's log comes back with the results, in one file
                subprocess.run(["tar", "czf", str(Path(os.environ["OUT"], f"grid{args.tag}-logs.tar.gz")), "-C",
                                str(logs), "."], check=False)
            write_json(f"grid{args.tag}_partial.json", {"tasks": done})
            if not any(t["path"] == task["path"] for t in waiting + [t for t, _, _ in running.values()]):
                drop(task["path"])  # no task left needs it: room for the next
        if builder.poll() is not None:
            budget = gpu_total_gib() - 2.0
        used = sum(_room(t) for t, _, _ in running.values())
        for task in list(waiting):
            ready = Path(task["path"], ".built").exists()
            if ready and len(running) < args.procs and used + _room(task) <= budget:
                log = logs / f"{task['arch']}-{len(done) + len(running)}.log"
                proc = subprocess.Popen([sys.executable, __file__, "--one", json.dumps(task)],
                                        stdout=log.open("w"), stderr=subprocess.STDOUT)
                running[proc] = (task, time.time(), log)
                used += _room(task)
                waiting.remove(task)
        if builder.poll() not in (None, 0) and any(not Path(t["path"], ".built").exists() for t in waiting):
            print("[grid] building a checkpoint failed; tasks that need it are skipped", flush=True)
            done += [{**t, "error": "checkpoint not built"} for t in waiting if not Path(t["path"], ".built").exists()]
            waiting = [t for t in waiting if Path(t["path"], ".built").exists()]
        time.sleep(2)
    builder.wait()
    return done


def _room(task: dict) -> float:
    """GPU memory kept for a running task: its predicted peak, 10 % more, and a CUDA context."""
    return task["peak_gib"] * 1.1 + 0.6


def _last_error(text: str) -> str:
    lines = [x for x in text.splitlines() if "Error" in x or "error" in x]
    return lines[-1][-400:] if lines else text[-400:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default=",".join(GRID_ARCHS))
    ap.add_argument("--cards", default=",".join(GRID_CARDS))
    ap.add_argument("--quants", default="4bit,16bit,fp8", help="run only pairs whose recommendation is one of these")
    ap.add_argument("--quants-for", default="", help='per architecture, e.g. "1b=4bit,16bit;8b=fp8" (others: --quants)')
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps on real-length rows")
    ap.add_argument("--procs", type=int, default=10)
    ap.add_argument("--builder-gib", type=float, default=22.0, help="GPU memory kept for the checkpoint builder")
    ap.add_argument("--part-timeout", type=int, default=420)
    ap.add_argument("--start-within", type=int, default=100000, help="start no task after this many seconds")
    ap.add_argument("--tag", default="")
    ap.add_argument("--plan-only", action="store_true", help="print what would run (no GPU needed)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--build", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        emit(one(json.loads(args.one)))
        return
    if args.build:
        converting: list[str] = []  # FP8 runs' checkpoints, deleted once loaded: one conversion at a time
        for arch, kind, for_fp8 in json.loads(args.build):
            waited = time.time()
            while for_fp8 and any(Path(p).exists() for p in converting) and time.time() - waited < 400:
                time.sleep(5)
            build(arch, kind, for_fp8)
            if for_fp8:
                converting.append(checkpoint(arch, "fp8")[1])
        return
    plans = [plan(a, c) for a in args.archs.split(",") for c in args.cards.split(",")]
    quants = {arch: args.quants.split(",") for arch in args.archs.split(",")}
    quants.update({a: q.split(",") for a, q in (p.split("=") for p in args.quants_for.split(";") if p)})
    tasks = [t for t in tasks_for(plans, args.steps) if t["config"]["quantization"] in quants[t["arch"]]]
    print_table([{"arch": t["arch"], "cards": "; ".join(t["cards"]), "quant": t["config"]["quantization"],
                  "seq": t["config"]["max_seq_length"], "batch": t["config"]["batch_size"],
                  "predicted_peak_gib": t["peak_gib"], "checkpoint": t["checkpoint"]} for t in tasks],
                ["arch", "cards", "quant", "seq", "batch", "predicted_peak_gib", "checkpoint"])
    if args.plan_only:
        return
    os.environ.pop("PYTORCH_CUDA_ALLOC_CONF", None)  # nbkit sets its own default; the grid measures that
    runs = run_all(tasks, args)
    write_json(f"grid{args.tag}.json", {"args": vars(args), "plans": plans, "runs": runs})
    (RESULTS / f"grid{args.tag}_partial.json").unlink(missing_ok=True)
    for path in {t["path"] for t in tasks}:
        drop(path)
    print_table([{"arch": r["arch"], "card": r["card"], "quant": r["config"]["quantization"],
                  "batch": r["config"]["batch_size"], "load_alloc": r.get("load_allocated_gib"),
                  "probe_alloc": r.get("probe_allocated_gib"), "probe_resv": r.get("probe_reserved_gib"),
                  "train_alloc": r.get("train_allocated_gib"), "train_resv": r.get("train_reserved_gib"),
                  "predicted": r["peak_gib"], "error": (r.get("error") or "")[:60]} for r in runs],
                ["arch", "card", "quant", "batch", "load_alloc", "probe_alloc", "probe_resv", "train_alloc",
                 "train_resv", "predicted", "error"])


if __name__ == "__main__":
    main()
