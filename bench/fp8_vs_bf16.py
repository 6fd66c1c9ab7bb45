"""FP8 vs bf16 LoRA speed, from the steady-state step times of the GPU scripts.

python bench/fp8_vs_bf16.py   (reads bench/results/*.json, no GPU needed)
Sources: memory_accuracy.py's records (1B and 8B shapes, H100, session 2: one process per model, both precisions
in the same call) and throughput.py's "bf16" and "fp8" variants (one process each, alternating, same call:
bash bench/device.sh fp8-1b-8k, fp8-8b-32k, ...). Each pair is summarised from its rows (median over the repeats
that finished: a call cut short keeps the ones before it). Speed is not affected by memory held over from an
earlier load, so every record counts here. The session-2 records were trained with padded batches, which nbkit no longer uses: they
are kept, marked current=False, and nbkit.planning.fp8.FP8_MEASURED holds only the current ones.
Writes bench/results/fp8_vs_bf16.json.
"""
from __future__ import annotations

import json

from common import RESULTS, print_table, write_json
from throughput import summarise


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
                         "winner": "fp8" if s["fp8"] > s["16bit"] else "bf16", "gpu": "H100",
                         "source": "memory_accuracy.py", "batches": "padded (session 2)", "current": False})
    for path in sorted(RESULTS.glob("throughput_*_fp8_vs_bf16*.json")):
        data = json.loads(path.read_text())
        by = {r["variant"]: r for r in summarise(data["rows"])}
        if "fp8" in by and "bf16" in by:
            a, fp8, bf16 = data["args"], by["fp8"], by["bf16"]
            (fp8_low, fp8_high), (bf16_low, bf16_high) = fp8["tokens_per_s_range"], bf16["tokens_per_s_range"]
            rows.append({"arch": a["arch"], "seq": a["seq"], "batch": a["batch"], "tokens": a["seq"] * a["batch"],
                         "bf16_tok_s": bf16["tokens_per_s"], "fp8_tok_s": fp8["tokens_per_s"],
                         "fp8_speedup": fp8["tokens_per_s"] / bf16["tokens_per_s"],
                         "winner": "fp8" if fp8["tokens_per_s"] > bf16["tokens_per_s"] else "bf16",
                         "gpu": data.get("gpu", "").replace("NVIDIA ", "").split(" ")[0],
                         "repeats": min(fp8["repeats"], bf16["repeats"]),
                         "fp8_speedup_range": [fp8_low / bf16_high, fp8_high / bf16_low],
                         "source": path.name, "batches": "padding-free (nbkit since session 4)", "current": True})
    print_table(rows, ["arch", "seq", "batch", "bf16_tok_s", "fp8_tok_s", "fp8_speedup", "winner"])
    write_json("fp8_vs_bf16.json", {"rows": rows})


if __name__ == "__main__":
    main()
