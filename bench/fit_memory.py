"""Fit the memory model's activation constant from the measured H100 peaks, and test how well it transfers.

python bench/fit_memory.py
The records are every clean peak in bench/results: memory_accuracy.py's runs (one model per process, rows of
exactly max_seq_length tokens) and the batches largest_batch.py trained under a cap. For each calibration
(Unsloth 16-bit, 4-bit, FP8; transformers 16-bit, 4-bit) the fit is the smallest `act_gc` (layers of
activations live at the peak, on a 0.05 grid) that predicts no record below its measured reserved peak.
nbkit.memory.CALIBRATION holds exactly these values (tests/test_memory.py re-runs the fit).

Cross-size check: fit on one model size alone and predict the other, which the fit did not see. Writes
bench/results/calibration_fit.json.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from common import RESULTS, print_table, write_json
from memory_accuracy import predict, saved_records

PROBE_MODELS = {"1b": "unsloth/Llama-3.2-1B-Instruct", "8b": "unsloth/Meta-Llama-3.1-8B-Instruct"}
GRID = [round(0.5 + 0.05 * i, 2) for i in range(90)]


def calibration_key(rec: dict) -> str:
    base = "unsloth" if rec["backend"] == "unsloth" else "transformers"
    if rec["quant"] == "fp8" and base == "unsloth":
        return "unsloth-fp8"
    return f"{base}-kbit" if rec["quant"] == "4bit" else base


def records(results: Path = RESULTS) -> list[dict]:
    """Measured peaks, each with what predict() needs."""
    from nbkit.specs import spec_for

    found = [r for r in saved_records(results) if r.get("gc", True)]
    for path in sorted(results.glob("largest_batch_*.json")):
        for r in json.loads(path.read_text())["rows"]:
            if r["trained"]:
                spec = spec_for(PROBE_MODELS[r["arch"]])
                fields = {k: getattr(spec, k) for k in spec.__dataclass_fields__ if k not in ("name", "checkpoint")}
                found.append({"arch": r["arch"], "backend": "unsloth", "quant": r["quant"], "gc": True,
                              "seq": r["seq"], "batch": r["batch"], "lora_r": 16, "spec": fields,
                              "measured_reserved_gib": r["peak_gib"], "source": path.name})
    return found


def errors(recs: list[dict], key: str, act_gc: float) -> list[float]:
    from nbkit import memory

    saved = memory.CALIBRATION[key]
    memory.CALIBRATION[key] = replace(saved, act_gc=act_gc)
    try:
        return [predict(r)["error_pct"] for r in recs]
    finally:
        memory.CALIBRATION[key] = saved


def fit(recs: list[dict]) -> dict[str, float]:
    """Per calibration, the smallest act_gc on the grid that predicts no record under its measurement."""
    out = {}
    for key in sorted({calibration_key(r) for r in recs}):
        group = [r for r in recs if calibration_key(r) == key]
        out[key] = next(a for a in GRID if min(errors(group, key, a)) >= 0)
    return out


def cross_size(recs: list[dict]) -> list[dict]:
    """Fit on one size, predict the other: the error on records the fit did not see."""
    rows = []
    for seen, unseen in (("1b", "8b"), ("8b", "1b")):
        for key, act in fit([r for r in recs if r["arch"] == seen]).items():
            held = [r for r in recs if r["arch"] == unseen and calibration_key(r) == key]
            if held:
                e = errors(held, key, act)
                rows.append({"fit_on": seen, "predicts": unseen, "calibration": key, "act_gc": act,
                             "records": len(held), "min_error_pct": min(e), "max_error_pct": max(e)})
    return rows


HELD_OUT = ["throughput_1b_4bit_first_step.json", "throughput_1b_4bit_first_step_mixed.json",
            "throughput_8b_4bit_display.json"]


def held_out(results: Path = RESULTS) -> list[dict]:
    """Peaks the fit never saw: nbkit's own runs in the session-4 speed measurements, with the batch path nbkit
    uses now (Unsloth's padding-free batches), on full-length and on real, mixed-length rows."""
    from nbkit.config import RunConfig
    from nbkit.memory import estimate
    from nbkit.specs import spec_for

    rows = []
    for name in HELD_OUT:
        data = json.loads((results / name).read_text())
        a = data["args"]
        spec = spec_for(PROBE_MODELS[a["arch"]])
        part = estimate(RunConfig(quantization=a["quant"], max_seq_length=a["seq"], batch_size=a["batch"]), spec)
        seen = set()
        for r in data["rows"]:
            if r["variant"].startswith("nbkit") and "peak_gib" in r and r["peak_gib"] not in seen:
                seen.add(r["peak_gib"])  # repeats of one run peak alike: one row each
                rows.append({"file": name, "lengths": a.get("lengths", "uniform"), "arch": a["arch"],
                             "shape": f"{a['seq']}x{a['batch']}", "measured_reserved_gib": r["peak_gib"],
                             "measured_allocated_gib": r.get("peak_allocated_gib"),
                             "predicted_gib": part.peak_reserved,
                             "error_pct": 100 * (part.peak_reserved - r["peak_gib"]) / r["peak_gib"]})
    return rows


def main() -> None:
    recs = records()
    fitted = fit(recs)
    in_sample = []
    for key, act in fitted.items():
        e = errors([r for r in recs if calibration_key(r) == key], key, act)
        in_sample.append({"calibration": key, "act_gc": act, "records": len(e), "min_error_pct": min(e),
                          "max_error_pct": max(e)})
    print_table(in_sample, ["calibration", "act_gc", "records", "min_error_pct", "max_error_pct"])
    print("\nfit on one size, predicting the other (records the fit did not see):")
    cross = cross_size(recs)
    print_table(cross, ["fit_on", "predicts", "calibration", "act_gc", "records", "min_error_pct", "max_error_pct"])
    print("\npeaks the fit never saw (nbkit's runs with padding-free batches; uniform and mixed-length rows):")
    held = held_out()
    print_table(held, ["file", "lengths", "arch", "shape", "measured_reserved_gib", "predicted_gib", "error_pct"])
    write_json("calibration_fit.json", {"fitted_act_gc": fitted, "in_sample": in_sample, "cross_size": cross,
                                        "held_out": held})


if __name__ == "__main__":
    main()
