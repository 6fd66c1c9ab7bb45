"""Fit the memory model's constants from the measured peaks, and say how well they predict peaks they never saw.

python bench/fit_memory.py
Records:
  grid    bench/grid.py's runs (bench/results/grid*.json): recommend()'s settings for nine architectures on five
          real cards, trained as nbkit trains now (Unsloth; padding-free batches, except Gemma 2): each run's
          probe on rows of exactly max_seq_length tokens. Target: the allocated peak (reserved is held to the card
          by recommend()'s margin). Their runs on real-length rows are compared with the plan, not fitted.
  legacy  memory_accuracy.py's and largest_batch.py's runs (rows of exactly max_seq_length, padded batches):
          the transformers calibrations. Their Unsloth records were taken with padded batches, which nbkit has not
          used since session 4, so the Unsloth calibrations are fitted on the grid alone.
For each calibration the fit is the smallest `act_gc` (layers of activations live at the peak, 0.05 grid) that
predicts no record under its target; then memory.SCORE_BYTES (0.5 grid) on Gemma 2's runs, whose attention
scores are materialised, and memory.SCORE_FRAGMENTATION (0.1 grid), what those scores leave reserved beyond the
allocation, so that the plan covers every reserved peak they had. nbkit.planning.memory holds exactly these values
(tests/test_memory_grid.py re-runs the fit).
Accuracy on data the fit did not see: leave one architecture out (fit act_gc on the other eight, predict it).
Writes bench/results/calibration_fit.json.
"""
from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from common import RESULTS, print_table, write_json
from memory_accuracy import predict, saved_records

PROBE_MODELS = {"1b": "unsloth/Llama-3.2-1B-Instruct", "8b": "unsloth/Meta-Llama-3.1-8B-Instruct"}
GRID = [round(0.5 + 0.05 * i, 2) for i in range(90)]
SCORE_GRID = [0.5 * i for i in range(1, 40)]


def calibration_key(rec: dict) -> str:
    base = "unsloth" if rec["backend"] == "unsloth" else "transformers"
    if rec["quant"] == "fp8" and base == "unsloth":
        return "unsloth-fp8"
    return f"{base}-kbit" if rec["quant"] == "4bit" else base


def grid_files(results: Path = RESULTS) -> list[Path]:
    """bench/grid.py's finished result files (a call cut short leaves only its `_partial` one)."""
    return [p for p in sorted(results.glob("grid*.json")) if not p.stem.endswith("_partial")]


def grid_runs(results: Path = RESULTS) -> list[dict]:
    """Every grid run that trained, from all grid result files."""
    return [{**r, "source": path.name} for path in grid_files(results)
            for r in json.loads(path.read_text())["runs"] if "error" not in r]


def grid_records(results: Path = RESULTS) -> list[dict]:
    """One record per grid run: its probe on rows of exactly max_seq_length tokens, the case the formulas are for.
    (The real-length runs come after the probe in the same process, and Unsloth keeps buffers sized for the
    probe's longer batches, so their peaks are not a function of their own batches: real_lengths() compares them
    with the plan instead.)"""
    found = []
    for run in grid_runs(results):
        c = run["config"]
        found.append({"arch": run["arch"], "model": run["model"], "card": run["card"], "backend": "unsloth",
                      "quant": c["quantization"], "config": c, "source": run["source"], "grid": True,
                      "batch": c["batch_size"], "seq": c["max_seq_length"], "target_gib": run["probe_allocated_gib"],
                      "reserved_gib": run["probe_reserved_gib"]})
    return found


def real_lengths(results: Path = RESULTS) -> list[dict]:
    """Each grid run on real-length rows against the plan recommend() made (rows filling max_seq_length), and its
    reserved peak against the smallest card it stands for."""
    from nbkit.planning.cards import card
    from nbkit.planning.config import RunConfig
    from nbkit.planning.memory import estimate
    from common import plain_spec as spec_for

    rows = []
    for run in grid_runs(results):
        plan = estimate(RunConfig.from_dict(run["config"]), spec_for(run["model"]))
        usable = min(card(c).usable_gib for c in run["cards"])
        rows.append({"arch": run["arch"], "cards": run["cards"], "quant": run["config"]["quantization"],
                     "batch": run["config"]["batch_size"], "planned_gib": plan.allocated,
                     "planned_reserved_gib": plan.reserved,
                     "allocated_gib": run["train_allocated_gib"], "reserved_gib": run["train_reserved_gib"],
                     "probe_reserved_gib": run["probe_reserved_gib"], "usable_gib": usable,
                     "below_plan_pct": 100 * (1 - run["train_allocated_gib"] / plan.allocated),
                     "oom_recoveries": len(run["notes"]), "losses_finite": run["losses_finite"]})
    return rows


def legacy_records(results: Path = RESULTS) -> list[dict]:
    """The transformers records of the older measurements (target: their reserved peak, as they were fitted)."""
    found = [r for r in saved_records(results) if r.get("gc", True)]
    return [{**r, "target_gib": r["measured_reserved_gib"]} for r in found if r["backend"] != "unsloth"]


def records(results: Path = RESULTS) -> list[dict]:
    return grid_records(results) + legacy_records(results)


def predicted_gib(rec: dict) -> float:
    """The training peak the current formulas predict for a record."""
    if not rec.get("grid"):
        return predict(rec)["predicted_gib"]
    from nbkit.planning.config import RunConfig
    from nbkit.planning.memory import estimate
    from common import plain_spec as spec_for

    cfg = RunConfig.from_dict(rec["config"])
    return estimate(cfg, spec_for(rec["model"]), rec["backend"], batch_size=rec["batch"], seq_len=rec["seq"]).allocated


@contextmanager
def constants(act_gc: dict[str, float] | None = None, fields: dict[str, dict] | None = None, **values):
    """nbkit.planning.memory with these act_gc values (per calibration), other calibration fields ({key: {field: value}}) and
    module constants (SCORE_BYTES=...) in place, restored afterwards."""
    from nbkit.planning import memory

    saved_calibration = dict(memory.CALIBRATION)
    saved = {name: getattr(memory, name) for name in values}
    for key, act in (act_gc or {}).items():
        memory.CALIBRATION[key] = replace(saved_calibration[key], act_gc=act)
    for key, changes in (fields or {}).items():
        memory.CALIBRATION[key] = replace(memory.CALIBRATION[key], **changes)
    for name, value in values.items():
        setattr(memory, name, value)
    try:
        yield
    finally:
        memory.CALIBRATION.clear()
        memory.CALIBRATION.update(saved_calibration)
        for name, value in saved.items():
            setattr(memory, name, value)


def errors(recs: list[dict]) -> list[float]:
    """Percent errors of the current predictions against the targets."""
    return [100.0 * (predicted_gib(r) - r["target_gib"]) / r["target_gib"] for r in recs]


def softcapped(rec: dict) -> bool:
    from common import plain_spec as spec_for

    return rec.get("grid", False) and spec_for(rec["model"]).softcapped_attention


def _errors_with(recs: list[dict], act_gc: dict[str, float], **values) -> list[float]:
    with constants(act_gc, **values):
        return errors(recs)


def fit(recs: list[dict]) -> dict[str, float]:
    """Per calibration, the smallest act_gc on the grid that predicts no record under its target (Gemma 2's
    records, whose score term is fitted next, left out)."""
    out = {}
    plain = [r for r in recs if not softcapped(r)]
    for key in sorted({calibration_key(r) for r in plain}):
        group = [r for r in plain if calibration_key(r) == key]
        out[key] = next(a for a in GRID if min(_errors_with(group, {key: a})) >= 0)
    return out


def fit_score_bytes(recs: list[dict], fitted: dict[str, float]) -> float | None:
    """The smallest SCORE_BYTES that predicts none of the softcapped records under, with `fitted` act_gc."""
    group = [r for r in recs if softcapped(r)]
    if not group:
        return None
    return next(b for b in SCORE_GRID if min(_errors_with(group, fitted, SCORE_BYTES=b)) >= 0)


def _round_up(x: float, step: float = 0.01) -> float:
    return round(math.ceil(round(x / step, 6)) * step, 2)


def unscaled_peaks(results: Path = RESULTS) -> list[dict]:
    """Every stored peak (bench/stored_peaks.py) beside a plan made with both factors at 1: what they are fitted on."""
    from nbkit.planning import memory
    from stored_peaks import stored

    unity = {key: {"reserve_factor": 1.0, "load_factor": 1.0} for key in memory.CALIBRATION}
    with constants(fields=unity):
        return stored(results)


def fit_factors(rows: list[dict] | None = None) -> dict[str, dict[str, float]]:
    """Per calibration, {"reserve_factor", "load_factor"}: the smallest multiples (0.01 grid, at least 1) of the
    planned allocation that cover every stored peak's reservation, training and loading, and every load's allocation.
    Gemma 2's training reservations are left to SCORE_FRAGMENTATION (fitted on them)."""
    rows = unscaled_peaks() if rows is None else rows
    out = {}
    for key in sorted({r["calibration"] for r in rows}):
        train = [r["reserved_gib"] / r["planned_allocated_gib"] for r in rows
                 if r["calibration"] == key and r["phase"] == "train" and not r["softcapped"]]
        load = [max(r["reserved_gib"], r["allocated_gib"]) / r["planned_reserved_gib"] for r in rows
                if r["calibration"] == key and r["phase"] == "load"]
        out[key] = {"reserve_factor": max(1.0, _round_up(max(train, default=1.0))),
                    "load_factor": max(1.0, _round_up(max(load, default=1.0)))}
    return out


FRAGMENTATION_GRID = [round(0.1 * i, 1) for i in range(0, 40)]


def fit_fragmentation(results: Path = RESULTS) -> float | None:
    """The smallest SCORE_FRAGMENTATION (0.1 grid) whose plan covers the reserved peaks (probe and real-length)
    of every run whose attention scores are materialised."""
    from nbkit.planning import memory
    from nbkit.planning.config import RunConfig
    from common import plain_spec as spec_for

    runs = [r for r in grid_runs(results) if spec_for(r["model"]).softcapped_attention]

    def covered() -> bool:
        return all(memory.estimate(RunConfig.from_dict(r["config"]), spec_for(r["model"])).reserved
                   >= max(r["probe_reserved_gib"], r["train_reserved_gib"]) for r in runs)

    for k in FRAGMENTATION_GRID if runs else []:
        with constants(SCORE_FRAGMENTATION=k):
            if covered():
                return k
    return None


def leave_one_out(recs: list[dict], peaks: list[dict] | None = None) -> list[dict]:
    """Each grid architecture predicted by constants fitted without it: act_gc per calibration, SCORE_BYTES (Gemma 2
    is the only architecture with materialised scores, so without it there is nothing to fit: 0), and the reserve
    factors (from every stored peak but its own). Errors are on the allocated peak of its probes; `reserved_over_plan`
    is its largest stored reservation (probe or real-length rows) over the reservation planned without it."""
    peaks = unscaled_peaks() if peaks is None else peaks
    rows = []
    grid = [r for r in recs if r.get("grid")]
    for arch in sorted({r["arch"] for r in grid}):
        others = [r for r in recs if r.get("arch") != arch or not r.get("grid")]
        fitted = fit(others)
        score = fit_score_bytes(others, fitted) or 0.0
        held = [r for r in grid if r["arch"] == arch]
        e = _errors_with(held, fitted, SCORE_BYTES=score)
        tag = f": {arch} on "
        factors = fit_factors([p for p in peaks if tag not in p["source"]])
        mine = [p for p in peaks if tag in p["source"] and p["phase"] == "train"]
        over = max(p["reserved_gib"] / (p["planned_allocated_gib"] * factors.get(p["calibration"], {})
                                        .get("reserve_factor", 1.0)) for p in mine if not p["softcapped"]) \
            if any(not p["softcapped"] for p in mine) else None
        rows.append({"arch": arch, "records": len(held), "act_gc_without_it": fitted, "score_bytes_without_it": score,
                     "min_error_pct": min(e), "max_error_pct": max(e), "reserved_over_plan": over})
    return rows


def loads(results: Path = RESULTS) -> list[dict]:
    """The load phase of every grid run against memory.load_peak (not fitted: counted bytes)."""
    from nbkit.planning.config import RunConfig
    from nbkit.planning.memory import estimate
    from common import plain_spec as spec_for

    rows = []
    for run in grid_runs(results):
        part = estimate(RunConfig.from_dict(run["config"]), spec_for(run["model"]))
        rows.append({"arch": run["arch"], "quant": run["config"]["quantization"],
                     "measured_allocated_gib": run["load_allocated_gib"], "predicted_gib": part.load,
                     "error_pct": 100 * (part.load / run["load_allocated_gib"] - 1)})
    return rows


HELD_OUT = ["throughput_1b_4bit_first_step.json", "throughput_1b_4bit_first_step_mixed.json",
            "throughput_8b_4bit_display.json"]


def held_out(results: Path = RESULTS) -> list[dict]:
    """Peaks the fit never saw: nbkit's own runs in the session-4 speed measurements (padding-free batches, full
    and real-length rows), against the plan for rows that fill max_seq_length."""
    from nbkit.planning.config import RunConfig
    from nbkit.planning.memory import estimate
    from common import plain_spec as spec_for

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
                             "error_pct": 100 * (part.peak_reserved - r["peak_allocated_gib"]) / r["peak_allocated_gib"]})
    return rows


def main() -> None:
    recs = records()
    fitted = fit(recs)
    score = fit_score_bytes(recs, fitted)
    in_sample = []
    for key in fitted:
        e = _errors_with([r for r in recs if calibration_key(r) == key], fitted, SCORE_BYTES=score)
        in_sample.append({"calibration": key, "act_gc": fitted[key], "records": len(e), "min_error_pct": min(e),
                          "max_error_pct": max(e)})
    print_table(in_sample, ["calibration", "act_gc", "records", "min_error_pct", "max_error_pct"])
    fragmentation = fit_fragmentation()
    print(f"\nSCORE_BYTES (Gemma 2's materialised attention scores): {score}; SCORE_FRAGMENTATION: {fragmentation}")
    peaks = unscaled_peaks()
    factors = fit_factors(peaks)
    print("\nreservation factors (every stored peak, bench/stored_peaks.py):")
    print_table([{"calibration": k, **v} for k, v in factors.items()], ["calibration", "reserve_factor", "load_factor"])
    print("\neach architecture predicted by constants fitted without it (records the fit did not see):")
    loo = leave_one_out(recs, peaks)
    print_table(loo, ["arch", "records", "score_bytes_without_it", "min_error_pct", "max_error_pct",
                      "reserved_over_plan"])
    print("\nloading (counted, not fitted):")
    load = loads()
    print_table(load, ["arch", "quant", "measured_allocated_gib", "predicted_gib", "error_pct"])
    print("\nreal-length rows against the plan (rows filling max_seq_length), reserved against the card:")
    real = real_lengths()
    print_table(real, ["arch", "quant", "batch", "planned_gib", "allocated_gib", "reserved_gib", "usable_gib",
                       "below_plan_pct", "oom_recoveries"])
    write_json("calibration_fit.json", {"fitted_act_gc": fitted, "score_bytes": score, "factors": factors,
                                        "score_fragmentation": fragmentation, "in_sample": in_sample,
                                        "leave_one_architecture_out": loo, "load": load, "real_lengths": real,
                                        "held_out": held_out()})


if __name__ == "__main__":
    main()
