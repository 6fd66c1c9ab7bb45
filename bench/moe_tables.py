"""bench/results/moe_full.json (bench/moe_full.py) as the Markdown tables docs/memory-model.md and
docs/gpu-verification.md show, through scripts/figures.py: the full-size runs against their plans, and nbkit against
raw Unsloth on one model."""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
NAMES = {"gptoss": "gpt-oss-20b", "qwen3moe": "Qwen3-30B-A3B", "gemma3-12b": "Gemma 3 12B", "mixtral": "Mixtral 8x7B"}
FULL_LAYERS = {"gptoss": 24, "qwen3moe": 48, "gemma3-12b": 48, "mixtral": 32}


def _runs(results: Path, part: str) -> list[dict]:
    return [r for r in json.loads((results / "moe_full.json").read_text())["results"] if r["part"].startswith(part)]


def _trained_batch(run: dict) -> str:
    """The batch the run trained with: the planned one, or the one the out-of-memory retries settled on."""
    c = run["config"]
    retried = [n for n in run["report"]["notes"] if n.startswith("out of GPU memory")]
    if not retried:
        return f"{c['batch_size']} × {c['grad_accum']}"
    return retried[-1].split("with batch ")[-1].split(" (")[0]


def full_table(results: Path = RESULTS) -> str:
    """One row per full-size run: plan against the process's peaks (load, training and exports), what it trained
    with, and what came out."""
    lines = ["| model (layers) | card (rehearsed) | precision | planned batch → trained | allocated: measured / "
             "planned | reserved: measured / planned | adapters moved | exports |", "|---|---|---|---|---|---|---|---|"]
    for r in _runs(results, "full"):
        c, rep = r["config"], r["report"]
        layers = f"{r['layers']} of {FULL_LAYERS[r['arch']]}" if r["layers"] != FULL_LAYERS[r["arch"]] else "all"
        planned = f"{c['batch_size']} × {c['grad_accum']}"
        trained = _trained_batch(r)
        batch = planned if trained == planned else f"{planned} → **{trained}** (out of memory)"
        pairs = ((r["process_allocated_gib"], r["planned_allocated_gib"]),
                 (r["process_reserved_gib"], r["planned_reserved_gib"]))
        if trained == planned:
            cells = [f"{m:.2f} / {p:.2f} ({100 * (p / m - 1):+.0f} %)" for m, p in pairs]
        else:  # the process's peak is where the planned batch hit the card's cap: a lower bound on its need
            cells = [f"> {m:.2f} (the cap) / {p:.2f} (at least {100 * (1 - p / m):.0f} % under)" for m, p in pairs]
        moved = f"{rep['lora_tensors_changed']}/{rep['lora_tensors']}"
        exports = "LoRA" + (", merged" if rep.get("merged_dir") else "")
        lines.append(f"| {NAMES[r['arch']]} ({layers}) | {r['card']} | {c['quantization']} | {batch} | {cells[0]} | "
                     f"{cells[1]} | {moved} | {exports} |")
    return "\n".join(lines)


def merged_table(results: Path = RESULTS) -> str:
    """What each merged export changed against its base checkpoint, per kind of weight."""
    lines = ["| model | weights | tensors changed by the merge | largest change (relative) |", "|---|---|---|---|"]
    for r in _runs(results, "full"):
        for kind, k in sorted(r.get("merged_vs_base", {}).get("kinds", {}).items()):
            lines.append(f"| {NAMES[r['arch']]} ({r['layers']} layers) | {kind} | {k['changed']} of {k['tensors']} | "
                         f"{k['largest_relative_change']:.4f} |")
    return "\n".join(lines)


def raw_table(results: Path = RESULTS) -> str:
    """nbkit (train.run) against Unsloth's notebook recipe on Qwen3-MoE, same settings and rows, in run order."""
    lines = ["| order | variant | precision | peak allocated / reserved, loading (GiB) | peak allocated / reserved, "
             "training (GiB) | steady step (s) | answer after training |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(_runs(results, ""), 1):
        if not r["part"].startswith(("raw", "speed")):
            continue
        variant, quant = r["part"].split("_")
        after = r.get("after", "(nbkit: the workflow's own sample; see the full runs)")
        after = f"fails ({after.removeprefix('FAILED: ')[:70]}…)" if after.startswith("FAILED") else after
        lines.append(f"| {i} | {'raw Unsloth' if variant == 'raw' else 'nbkit'} | {quant} | "
                     f"{r['load_allocated_gib']:.2f} / {r['load_reserved_gib']:.2f} | "
                     f"{r['train_allocated_gib']:.2f} / {r['train_reserved_gib']:.2f} | "
                     f"{r['steady_step_seconds']:.3f} | {after} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(full_table(), merged_table(), raw_table(), sep="\n\n")
