"""FP8 vs bf16 LoRA speed on the H100, from the steady-state step times recorded by memory_accuracy.py.

python bench/fp8_vs_bf16.py   (reads bench/results/*.json, no GPU needed; measure with memory_accuracy.py first)
Speed is not affected by memory held over from an earlier load, so every record counts here.
Writes bench/results/fp8_vs_bf16.json; nbkit.memory.FP8_SPEEDUP_BY_BILLIONS is taken from it.
"""
from __future__ import annotations

import json

from common import RESULTS, print_table, write_json


def main() -> None:
    speeds: dict = {}
    for path in sorted(RESULTS.glob("mem*.json")):
        if path.stem.endswith("_report"):
            continue
        for r in json.loads(path.read_text())["records"]:
            if r.get("shared_gpu"):  # timed while other jobs shared the GPU
                continue
            if r["backend"] == "unsloth" and r.get("tok_s_steady") and r["quant"] in ("fp8", "16bit"):
                speeds.setdefault((r["arch"], r["seq"], r["batch"]), {})[r["quant"]] = r["tok_s_steady"]
    rows = []
    for (arch, seq, batch), s in sorted(speeds.items()):
        if "fp8" in s and "16bit" in s:
            rows.append({"arch": arch, "seq": seq, "batch": batch, "tokens": seq * batch, "bf16_tok_s": s["16bit"],
                         "fp8_tok_s": s["fp8"], "fp8_speedup": s["fp8"] / s["16bit"],
                         "winner": "fp8" if s["fp8"] > s["16bit"] else "bf16"})
    print_table(rows, ["arch", "seq", "batch", "bf16_tok_s", "fp8_tok_s", "fp8_speedup", "winner"])
    write_json("fp8_vs_bf16.json", {"rows": rows})


if __name__ == "__main__":
    main()
