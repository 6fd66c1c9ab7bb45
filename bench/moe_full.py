"""Today's models at their full size on the cards they are recommended for (#37): build, plan, train, export, check.

python bench/moe_full.py [--phases compare,full,rest] [--start-within 1320]
Building and loading checkpoints of 20-30 B parameters outlasts one device command, so this runs as one background
pipeline (bench/device.sh moe-full starts it with setsid; moe-poll waits on it) and writes what it has after every
part to /tmp/moe_full (moe_full.json, the children's logs). Checkpoints are random weights of the curated configs
(nbkit/specs/models.json), saved in bf16 where they fit (disk, or /dev/shm: the machine's memory) and deleted after
their run; a model that does not fit at all is built as deep as fits, and the result says how deep.

Phases (each part a process of its own):
  compare  raw Unsloth vs nbkit on Qwen3-MoE (8 of 48 layers), 4-bit then 16-bit, alternating, same settings and
           rows (real lengths); no other training on the GPU meanwhile (the full checkpoints are being written)
  full     side by side (memory only): gpt-oss-20b (24 layers) on a rehearsed RTX 4090 24GB, Qwen3-30B-A3B (48) on
           a rehearsed A100 40GB, Qwen3-MoE (8 layers) on the 4090 with its merged export checked tensor by tensor
  cause    (not run by default) the Qwen3-MoE workflow on rows of few vs many distinct tokens, with and without
           the answers before training: which one makes training hold more than the plan
  rest     Gemma 3 12B (48 layers) on a rehearsed T4 with merged export; Mixtral 8x7B (8 of 32 layers) on a
           rehearsed A100 40GB
A full run is recommend() on the card, then workflow.run on rows cut to the planned length (the worst case the plan
is for), recording the plan, the peaks (load phase included), the answers, verification and the exports.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import child_result, emit

WORK = Path("/tmp/moe_full")
CARD_OF = {"gptoss": "RTX 4090 24GB", "qwen3moe": "A100 40GB", "qwen3moe-8": "RTX 4090 24GB",
           "gemma3-12b": "T4", "mixtral": "A100 40GB"}
T0 = time.time()
results: list[dict] = []
lock = threading.Lock()


def say(line: str) -> None:
    with lock, (WORK / "progress.txt").open("a") as f:
        f.write(f"[{time.time() - T0:6.0f}s] {line}\n")
    print(line, flush=True)


def record(entry: dict) -> None:
    with lock:
        results.append(entry)
        (WORK / "moe_full.json").write_text(json.dumps({"results": results}, indent=1, default=str))


def gb_per_layer(arch: str) -> tuple[float, float, int]:
    """(GB of bf16 weights outside the layers, GB a decoder layer, layers) of arch's curated config."""
    from moe import ARCH_IDS
    from nbkit.specs import spec_for

    spec = spec_for(ARCH_IDS[arch])
    total = 2 * spec.total_params / 1e9
    fixed = 2 * spec.embedding_params / 1e9
    return fixed, (total - fixed) / spec.num_hidden_layers, spec.num_hidden_layers


def mem_available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1e6
    return 0.0


def place(arch: str, layers: int, prefer: str) -> tuple[str, int | None]:
    """(root, layers) for a checkpoint: the preferred storage, else the other, else as many layers as fit (None:
    not one)."""
    fixed, per_layer, full = gb_per_layer(arch)
    want = layers or full
    roots = [prefer] + [r for r in ("/tmp", "/dev/shm") if r != prefer]

    def room(root: str) -> float:
        free = shutil.disk_usage(root).free / 1e9 - 3
        return min(free, mem_available_gb() - 45) if root == "/dev/shm" else free

    for root in roots:
        if room(root) >= fixed + per_layer * want:
            return f"{root}/nbkit-models", layers
    best = max(roots, key=room)
    deep = int((room(best) - fixed) // per_layer)
    return f"{best}/nbkit-models", deep if deep > 0 else None


def build(arch: str, layers: int, prefer: str) -> str | None:
    root, depth = place(arch, layers, prefer)
    if depth is None:
        say(f"{arch}: no room for even one layer")
        return None
    if depth != layers:
        say(f"{arch}: {layers or 'all'} layers do not fit; building {depth} (as deep as fits) in {root}")
    t = time.time()
    rc, res, out = child_result([sys.executable, __file__, "--build", json.dumps([arch, depth, root])], 900)
    (WORK / f"build-{arch}.log").write_text(out)
    say(f"built {arch} ({depth or 'all'} layers) in {root}: rc={rc} {time.time() - t:.0f}s "
        f"shm free {shutil.disk_usage('/dev/shm').free / 1e9:.0f} GB, disk free {shutil.disk_usage('/tmp').free / 1e9:.0f} GB")
    return res["path"] if res else None


def part(kind: str, arch: str, path: str | None, timeout: int, **extra) -> dict | None:
    if path is None:
        return None
    if time.time() - T0 > ARGS.start_within:
        say(f"skipped {kind} {arch}: past --start-within")
        record({"part": kind, "arch": arch, "skipped": "time"})
        return None
    t = time.time()
    spec = json.dumps({"kind": kind, "arch": arch, "path": path, **extra})
    rc, res, out = child_result([sys.executable, __file__, "--one", spec], timeout)
    name = f"{kind}-{arch}-{len(results)}"
    (WORK / f"{name}.log").write_text(out)
    entry = {"part": kind, "arch": arch, "path": path, "rc": rc, "seconds": time.time() - t, **extra,
             **(res or {"error": "no result", "tail": out[-1500:]})}
    record(entry)
    say(f"{name}: rc={rc} {time.time() - t:.0f}s " + json.dumps({k: v for k, v in entry.items() if k.endswith(
        ("_gib", "tokens_per_second_wall", "steady_step_seconds", "error", "after", "ok"))})[:600])
    return entry


def drop(path: str | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)


def side_by_side(*tracks) -> None:
    threads = [threading.Thread(target=t) for t in tracks]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def phase_compare_and_build(paths: dict) -> None:
    paths["qwen3moe-8"] = build("qwen3moe", 8, "/tmp")

    def compare():
        for kind in ("raw_4bit", "speed_4bit", "speed_16bit", "raw_16bit"):  # each variant first once
            part(kind, "qwen3moe", paths["qwen3moe-8"], 300)

    def builds():
        paths["gptoss"] = build("gptoss", 0, "/tmp")
        paths["qwen3moe"] = build("qwen3moe", 0, "/dev/shm")

    side_by_side(compare, builds)


def phase_full(paths: dict) -> None:
    def one(arch, key, merged):
        def track():
            part("full", arch, paths.get(key), 540, card=CARD_OF[key], merged=merged, steps=3)
            drop(paths.get(key))
        return track

    side_by_side(one("gptoss", "gptoss", False), one("qwen3moe", "qwen3moe", False),
                 one("qwen3moe", "qwen3moe-8", True))


def phase_rest(paths: dict) -> None:
    def gemma():
        path = build("gemma3-12b", 0, "/tmp")
        part("full", "gemma3-12b", path, 540, card=CARD_OF["gemma3-12b"], merged=True, steps=3)
        drop(path)

    def mixtral():
        path = build("mixtral", 8, "/dev/shm")
        part("full", "mixtral", path, 540, card=CARD_OF["mixtral"], merged=False, steps=3)
        drop(path)

    side_by_side(gemma, mixtral)


def phase_cause(paths: dict) -> None:
    """Why Qwen3-MoE and Mixtral held more in the workflow than the plan (and than train.run on random ids): the
    same 8-layer Qwen3-MoE workflow with rows of few vs many distinct tokens, with and without the answers
    generated before training; one process each, side by side (memory only)."""
    path = build("qwen3moe", 8, "/tmp")

    def one(varied, before):
        return lambda: part("cause", "qwen3moe", path, 400, card=CARD_OF["qwen3moe-8"], merged=False, steps=3,
                            varied=varied, before=before)

    side_by_side(*(one(v, b) for v in (False, True) for b in (True, False)))
    drop(path)


def main() -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    say(f"start: shm free {shutil.disk_usage('/dev/shm').free / 1e9:.0f} GB, disk free "
        f"{shutil.disk_usage('/tmp').free / 1e9:.0f} GB, memory available {mem_available_gb():.0f} GB")
    paths: dict = {}
    phases = {"compare": phase_compare_and_build, "full": phase_full, "rest": phase_rest, "cause": phase_cause}
    for name in ARGS.phases.split(","):
        say(f"phase {name}")
        phases[name](paths)
    say("done")


def child() -> None:
    if ARGS.build:
        from moe import build as build_checkpoint

        arch, layers, root = json.loads(ARGS.build)
        emit({"path": build_checkpoint(arch, layers, root)})
        return
    spec = json.loads(ARGS.one)
    from moe import part_raw, part_speed
    from moe_full_parts import part_full

    try:
        kind, arch, path = spec["kind"], spec["arch"], spec["path"]
        if kind.startswith("raw"):
            result = part_raw(arch, path, 8, kind.split("_")[1])
        elif kind.startswith("speed"):
            result = part_speed(arch, path, 8, kind.split("_")[1])
        else:
            result = part_full(path, spec["card"], spec["steps"], spec["merged"], spec.get("varied", False),
                               spec.get("before", True))
    except Exception as exc:  # noqa: BLE001 — the failure is the result
        import traceback

        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {str(exc)[:800]}"}
    emit(result)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", default="compare,full,rest")
    ap.add_argument("--start-within", type=float, default=1080, help="seconds after which no part starts")
    ap.add_argument("--build", help=argparse.SUPPRESS)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ARGS = ap.parse_args()
    if ARGS.build or ARGS.one:
        child()
    else:
        os.environ.pop("PYTORCH_CUDA_ALLOC_CONF", None)
        main()
