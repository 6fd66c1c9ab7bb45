"""A notebook session on the GPU, in real Jupyter kernels, rehearsed on a T4's memory (Unsloth, random weights):

notebook   the 16 GB notebook (Llama-3.1-8B shape, 4-bit, emulate_tier=True) Run All twice in one kernel: both
           runs must train without running out of memory; the second releases the first run's model and says so.
load       in one kernel, under a T4 rehearsal: the recommended 8B 4-bit plan loaded, loaded again (the first is
           released), then trained a few steps; a third load with keep_previous=True must be refused by the memory
           check, which names what holds the memory.
scope      a rehearsal ends with its `with` block, and an H100 rehearsal works after a T4 one.

Writes session_rehearsal.json: each cell's error (if any) and seconds, and the kernel's reserved / allocated
memory after each load and run (torch's counters, GiB).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from common import RESULTS, random_model, write_json

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from helpers.kernel import Kernel, notebook_cells  # noqa: E402  (the same driver the CPU tests use)

ROOT = Path(__file__).resolve().parent.parent
MEMORY = ('import json, torch\nprint("MEM", json.dumps({"reserved": torch.cuda.memory_reserved() / 2**30, '
          '"allocated": torch.cuda.memory_allocated() / 2**30, "peak_reserved": torch.cuda.max_memory_reserved() '
          '/ 2**30}))')


def memory(kernel: Kernel) -> dict:
    out = kernel.run(MEMORY)
    return json.loads(re.search(r"MEM (\{.*\})", out.text).group(1))


def cell(run) -> dict:
    lines = [x for x in run.text.splitlines() if x.startswith("nbkit:") or "Training finished" in x
             or "released" in x]
    return {"code": run.code[:80], "seconds": round(run.seconds, 1), "error": run.error, "said": lines[-6:]}


def notebook_twice(model: str, steps: int, work: Path) -> dict:
    cells = notebook_cells(ROOT / "notebooks" / "16gb.ipynb", model=model, smoke=False, emulate_tier=True,
                           max_steps=steps, save_merged=False, save_gguf=False, output_dir=str(work / "outputs"))
    kernel = Kernel(work)
    try:
        passes = []
        for _ in range(2):
            runs = kernel.run_all(cells, timeout=400)
            passes.append({"cells": [cell(r) for r in runs], "completed": len(runs) == len(cells)
                           and not runs[-1].error, "memory": memory(kernel)})
            print(f"[notebook] pass {len(passes)}: completed={passes[-1]['completed']} {passes[-1]['memory']}",
                  flush=True)
    finally:
        kernel.close()
    return {"passes": passes, "ok": all(p["completed"] for p in passes)}


LOAD = """import nbkit
from nbkit.planning import cards
from nbkit.loading import data, models
from nbkit.training import train
from nbkit.planning.config import RunConfig
from nbkit.planning.recommend import fill_in
gpu = cards.emulate("T4")
rec = fill_in(RunConfig(model={model!r}, max_steps={steps}, max_samples=64, output_dir={out!r}), gpu)
print(rec.summary())"""


def load_twice(model: str, steps: int, work: Path) -> dict:
    kernel = Kernel(work)
    out = {}
    try:
        out["plan"] = cell(kernel.run(LOAD.format(model=model, steps=steps, out=str(work / "run")), timeout=300))
        out["first"] = cell(kernel.run("first = models.load(rec.config)", timeout=300))
        out["after_first"] = memory(kernel)
        second = kernel.run("second = models.load(rec.config)", timeout=300)
        out["second"], out["after_second"] = cell(second), memory(kernel)
        out["released_said"] = "released the model loaded earlier" in second.text
        trained = kernel.run("result = train.run(second, data.prepare(rec.config, second.tokenizer))\n"
                             "print('nbkit:', result.summary())", timeout=300)
        out["train"], out["after_train"] = cell(trained), memory(kernel)
        third = kernel.run("third = models.load(rec.config, keep_previous=True)", timeout=300)
        out["keep_previous"] = cell(third)
        out["old_model_says"] = cell(kernel.run("first.model.generate"))
        out["scope"] = cell(kernel.run(
            "from nbkit.planning.hardware import check_gpu\n"
            "with cards.emulate('T4') as g:\n    print('nbkit: inside', g.name, round(g.capped_gib, 2))\n"
            "print('nbkit: after', check_gpu().name, check_gpu().capped_gib)\n"
            "h = cards.emulate('H100')\nprint('nbkit: then', h.name)\nh.end()\nprint('nbkit: ended', check_gpu().name)"))
    finally:
        kernel.close()
    out["ok"] = (out["released_said"] and not out["train"]["error"]
                 and (out["keep_previous"]["error"] or [""])[0] == "HardwareError" and not out["scope"]["error"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="8b")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--parts", default="notebook,load")
    ap.add_argument("--work", default="/tmp/nbkit-session")
    args = ap.parse_args()
    model = random_model(args.arch)
    path = RESULTS / "session_rehearsal.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for name, fn in (("notebook", notebook_twice), ("load", load_twice)):
        if name in args.parts.split(","):
            t = time.time()
            work = Path(args.work) / name
            work.mkdir(parents=True, exist_ok=True)
            results[name] = {**fn(model, args.steps, work), "seconds": round(time.time() - t, 1),
                             "arch": args.arch, "card": "T4 (rehearsed)"}
            print(f"[{name}] ok={results[name]['ok']} in {results[name]['seconds']} s", flush=True)
            write_json(path.name, results)
    print(json.dumps({k: v.get("ok") for k, v in results.items()}))


if __name__ == "__main__":
    main()
