"""The README's benchmark figure: tokens/s and peak VRAM per configuration, from bench/results (no GPU needed).

python bench/plot.py   ->  docs/img/bench.png (+ bench/results/plot_data.json, the numbers drawn)
All bars are Llama-3.1-8B architecture, seq 2048 x batch 4, LoRA r=16 on all linear layers, one H100:
the three 4-bit runs are one throughput.py run (same data, one process each); the 16-bit and FP8 bars take
speed from fp8_vs_bf16.json and peak memory from the clean (one model per process) memory runs.
"""
from __future__ import annotations

import json

from common import RESULTS, ROOT, print_table, write_json


def load(name: str):
    return json.loads((RESULTS / name).read_text())


def clean_peak(quant: str, arch: str = "8b", seq: int = 2048, batch: int = 4) -> float:
    for path in sorted(RESULTS.glob("mem*_*.json")):
        if path.stem.endswith("_report"):
            continue
        for r in load(path.name)["records"]:
            if (r["arch"], r["quant"], r["seq"], r["batch"], r["backend"]) == (arch, quant, seq, batch, "unsloth") \
                    and r.get("load_index", 0) == 0 and r["status"] == "ok":
                return r["measured_reserved_gib"]
    raise SystemExit(f"no clean {arch} {quant} {seq}x{batch} memory record in bench/results")


def rows() -> list[dict]:
    tput = {r["variant"]: r for r in load("throughput_8b_4bit.json")["rows"]}
    fp8 = next(r for r in load("fp8_vs_bf16.json")["rows"] if (r["arch"], r["seq"], r["batch"]) == ("8b", 2048, 4))
    return [
        {"config": "HF+peft+bnb\n4-bit", "tokens_per_s": tput["hf"]["tokens_per_s"], "peak_gib": tput["hf"]["peak_gib"]},
        {"config": "raw Unsloth\n4-bit", "tokens_per_s": tput["raw"]["tokens_per_s"], "peak_gib": tput["raw"]["peak_gib"]},
        {"config": "nbkit\n4-bit", "tokens_per_s": tput["nbkit"]["tokens_per_s"], "peak_gib": tput["nbkit"]["peak_gib"]},
        {"config": "nbkit\n16-bit", "tokens_per_s": fp8["bf16_tok_s"], "peak_gib": clean_peak("16bit")},
        {"config": "nbkit\nFP8", "tokens_per_s": fp8["fp8_tok_s"], "peak_gib": clean_peak("fp8")},
    ]


def main() -> None:
    from matplotlib.figure import Figure

    data = rows()
    labels = [r["config"] for r in data]
    colors = ["#9c9c9c", "#f28e2b", "#4e79a7", "#59a14f", "#b07aa1"]
    fig = Figure(figsize=(11, 3.6))
    for i, (key, title) in enumerate((("tokens_per_s", "training tokens/s (higher is better)"),
                                      ("peak_gib", "peak VRAM, GiB (lower is better)"))):
        ax = fig.add_subplot(1, 2, i + 1)
        values = [r[key] for r in data]
        ax.bar(range(len(values)), values, color=colors)
        ax.set_xticks(range(len(values)), labels, fontsize=8)
        ax.set_title(title, fontsize=10, y=1.02)
        ax.grid(axis="y", alpha=0.3)
        for x, v in enumerate(values):
            ax.annotate(f"{v:,.0f}" if v >= 100 else f"{v:.1f}", (x, v), ha="center", va="bottom", fontsize=8)
    fig.suptitle("Llama-3.1-8B LoRA r=16, 2048 tokens x batch 4, one H100 (bench/results)", fontsize=10, y=1.02)
    out = ROOT / "docs" / "img" / "bench.png"
    fig.savefig(out, dpi=100, bbox_inches="tight")
    print_table([{**r, "config": r["config"].replace("\n", " ")} for r in data], ["config", "tokens_per_s", "peak_gib"])
    write_json("plot_data.json", {"rows": data, "image": str(out.relative_to(ROOT))})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
