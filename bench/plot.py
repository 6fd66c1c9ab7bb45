"""The README's benchmark figure: tokens/s and peak VRAM per configuration, from bench/results (no GPU needed).

python bench/plot.py   ->  docs/img/bench.png (+ bench/results/plot_data.json, the numbers drawn)
All bars are Llama-3.1-8B architecture, seq 2048 x batch 4, LoRA r=16 on all linear layers, one H100, each the
median over the alternating repeats of one throughput.py call (one process per run): the three 4-bit set-ups from
throughput_8b_4bit.json, 16-bit and FP8 LoRA through nbkit from the FP8-vs-bf16 call (padding-free batches).
"""
from __future__ import annotations

import json

from common import RESULTS, ROOT, print_table, write_json


def load(name: str):
    return json.loads((RESULTS / name).read_text())


def medians(name: str) -> dict:
    return {r["variant"]: r for r in load(name)["summary"]}


def rows() -> list[dict]:
    qlora, precision = medians("throughput_8b_4bit.json"), medians("throughput_8b_fp8_fp8_vs_bf16_8k.json")
    bars = [("HF+peft+bnb\n4-bit", qlora["hf"]), ("raw Unsloth\n4-bit", qlora["raw"]), ("nbkit\n4-bit", qlora["nbkit"]),
            ("nbkit\n16-bit", precision["bf16"]), ("nbkit\nFP8", precision["fp8"])]
    return [{"config": label, "tokens_per_s": r["tokens_per_s"], "peak_gib": r["peak_gib"], "repeats": r["repeats"]}
            for label, r in bars]


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
