"""Every stored measurement of a peak, beside what the current memory model plans for it.

python bench/stored_peaks.py    prints the table (worst first) and the largest measured/planned ratios
Sources (bench/results/):
  grid*.json            recommend()'s settings on nine architectures and five cards: each run's load, its probe on rows
                        of exactly max_seq_length, and its training on real-length rows (Unsloth)
  sharded_*.json        sharded QLoRA on two GPUs (FSDP, transformers), and the same models loaded whole on one GPU
  packing_*.json        nbkit's packed runs (one epoch of mixed-length rows, Unsloth)
  throughput_*_first_step*.json, throughput_8b_4bit_display.json
                        nbkit's runs in the speed measurements (padding-free, full and real-length rows)
  load_peak_8b.json     the three loaders of an 8B model (4-bit, 16-bit, FP8 from bf16)
Each row: where it comes from, the phase (load or train), the calibration that plans it, what torch allocated and
reserved at the peak, and what the plan allocates and reserves for it. tests/test_memory_grid.py checks that no
stored reservation exceeds its planned reservation and no stored load exceeds its planned load.
"""
from __future__ import annotations

import json
from pathlib import Path

from common import RESULTS, print_table

SPEED_FILES = ["throughput_1b_4bit_first_step.json", "throughput_1b_4bit_first_step_mixed.json",
               "throughput_8b_4bit_display.json"]
SPEED_MODELS = {"1b": "unsloth/Llama-3.2-1B-Instruct", "8b": "unsloth/Meta-Llama-3.1-8B-Instruct"}


def _plan(config: dict, model: str, backend: str = "unsloth", processes: int = 1):
    from nbkit.planning.config import RunConfig
    from nbkit.planning.memory import estimate
    from common import plain_spec as spec_for

    cfg = RunConfig.from_dict({**config, "output_dir": config.get("output_dir") or "x"})
    return estimate(cfg, spec_for(model), backend, processes=processes)


def _row(source, phase, calibration, allocated, reserved, plan, note="", model="") -> dict:
    from common import plain_spec as spec_for

    planned_allocated = plan.load if phase == "load" else plan.allocated
    planned_reserved = plan.load if phase == "load" else plan.reserved
    return {"source": source, "phase": phase, "calibration": calibration, "model": model,
            "softcapped": bool(model) and spec_for(model).softcapped_attention, "allocated_gib": allocated,
            "reserved_gib": reserved, "planned_allocated_gib": planned_allocated,
            "planned_reserved_gib": planned_reserved,
            "reserved_over_plan": reserved / planned_reserved if reserved is not None else None,
            "allocated_over_plan": allocated / planned_allocated if allocated is not None else None, "note": note}


def _calibration(backend: str, quantization: str, parallelism: str = "auto") -> str:
    if parallelism == "fsdp":
        return "transformers-fsdp"
    base = "unsloth" if backend == "unsloth" else "transformers"
    if quantization == "fp8" and base == "unsloth":
        return "unsloth-fp8"
    return f"{base}-kbit" if quantization == "4bit" else base


def grid(results: Path = RESULTS) -> list[dict]:
    from fit_memory import grid_runs

    rows = []
    for run in grid_runs(results):
        c, where = run["config"], f"{run['source']}: {run['arch']} on {run['card']}"
        plan, key = _plan(c, run["model"]), _calibration("unsloth", c["quantization"])
        m = run["model"]
        rows.append(_row(where, "load", key, run["load_allocated_gib"], run["load_reserved_gib"], plan, model=m))
        rows.append(_row(where, "train", key, run["probe_allocated_gib"], run["probe_reserved_gib"], plan,
                         "probe: rows of exactly max_seq_length", m))
        rows.append(_row(where, "train", key, run["train_allocated_gib"], run["train_reserved_gib"], plan,
                         "real-length rows", m))
    return rows


def sharded(results: Path = RESULTS) -> list[dict]:
    rows = []
    for path in sorted(results.glob("sharded_*.json")):
        data = json.loads(path.read_text())
        for run in data["runs"]:
            if run.get("rank", 0) != 0 or "backend" not in run:  # the plain FSDP recipe has no nbkit plan
                continue
            config = dict(model=data["model_shape"], quantization="4bit", max_seq_length=run["seq"],
                          batch_size=run["batch"], lora_r=16, parallelism=run["parallelism"])
            plan = _plan(config, data["model_shape"], run["backend"], run["processes"])
            key = _calibration(run["backend"], "4bit", run["parallelism"])
            cap = run.get("cap_gib") or run.get("cap_arg")
            note = f"{run['variant']}, {run['processes']} GPU(s)" + (f", torch capped at {cap} GiB" if cap else "")
            where = f"{path.name}: {run['variant']}" + (f" cap {run.get('cap_arg')}" if run.get("cap_arg") else "") \
                + (f" on {run['card']}" if run.get("card") else "")
            m = data["model_shape"]
            rows.append(_row(where, "load", key, run["load_allocated_gib"], run["load_reserved_gib"], plan, note, m))
            rows.append(_row(where, "train", key, run["peak_allocated_gib"], run["peak_reserved_gib"], plan, note, m))
    return rows


def packing(results: Path = RESULTS) -> list[dict]:
    rows = []
    for path in sorted(results.glob("packing_*.json")):
        data = json.loads(path.read_text())
        a = data["args"]
        config = dict(quantization="4bit", max_seq_length=a["seq"], batch_size=a["batch"], grad_accum=1)
        plan = _plan(config, SPEED_MODELS[a["arch"]])
        for r in data["rows"]:
            if r["variant"] == "nbkit" and "peak_reserved_gib" in r:
                rows.append(_row(f"{path.name}: repeat {r['repeat']}", "train", "unsloth-kbit",
                                 r["peak_allocated_gib"], r["peak_reserved_gib"], plan,
                                 "packed, mixed lengths; the process's peak, load included", SPEED_MODELS[a["arch"]]))
    return rows


def speed(results: Path = RESULTS) -> list[dict]:
    rows = []
    for name in SPEED_FILES:
        data = json.loads((results / name).read_text())
        a = data["args"]
        config = dict(quantization=a["quant"], max_seq_length=a["seq"], batch_size=a["batch"])
        plan = _plan(config, SPEED_MODELS[a["arch"]])
        for r in data["rows"]:
            if r["variant"].startswith("nbkit") and "peak_gib" in r:
                rows.append(_row(f"{name}: {r['variant']}", "train", _calibration("unsloth", a["quant"]),
                                 r.get("peak_allocated_gib"), r["peak_gib"], plan,
                                 f"{a.get('lengths', 'uniform')} rows; the process's peak, load included",
                                 SPEED_MODELS[a["arch"]]))
    return rows


def loader(results: Path = RESULTS) -> list[dict]:
    rows = []
    for r in json.loads((results / "load_peak_8b.json").read_text())["rows"]:
        plan = _plan(dict(quantization=r["quant"], max_seq_length=2048, batch_size=1), SPEED_MODELS["8b"])
        rows.append(_row(f"load_peak_8b.json: {r['quant']}", "load", _calibration("unsloth", r["quant"]),
                         r["measured_allocated_gib"], r["measured_reserved_gib"], plan, model=SPEED_MODELS["8b"]))
    return rows


def moe(results: Path = RESULTS) -> list[dict]:
    """Mixture-of-experts and Gemma 3 peaks (bench/moe.py, issue #37): full-length shapes after loading, and whole
    runs, each on its rehearsed card (bf16 or not), planned from the spec stored beside it."""
    from nbkit.planning.config import RunConfig
    from nbkit.planning.memory import estimate
    from nbkit.specs import from_config_dict

    rows = []
    for name in ("moe_fit.json", "moe_device.json"):
        path = results / name
        if not path.exists():
            continue
        for run in json.loads(path.read_text())["results"]:
            if "spec" not in run:
                continue
            spec = from_config_dict(run["spec"], run["spec"].get("name", ""))
            where = f"{name}: {run['part']} {run['arch']} ({run['layers'] or 'all'} layers) on {run['card']}"
            for shape in run.get("shapes", [])[1:]:
                if shape["status"] != "ok":
                    continue
                cfg = RunConfig(model="x", quantization=run["quant"], max_seq_length=shape["seq"],
                                batch_size=shape["batch"], output_dir="x")
                plan = estimate(cfg, spec, "unsloth", bf16=shape["bf16"])
                note = f"rows of exactly {shape['seq']} tokens x {shape['batch']}"
                rows.append(_row(where, "train", _calibration("unsloth", run["quant"]), shape["allocated_gib"],
                                 shape["reserved_gib"], plan, note))
            if "train_allocated_gib" in run and "predicted" in run:
                cfg = RunConfig.from_dict(run["config"])
                plan = estimate(cfg, spec, "unsloth", bf16=run["card"] not in ("T4",))
                rows.append(_row(where, "train", _calibration("unsloth", cfg.quantization),
                                 run["train_allocated_gib"], run["train_reserved_gib"], plan,
                                 "workflow.run on the default data (packing auto)"))
    return rows


def moe_table(results: Path = RESULTS) -> str:
    """moe()'s full-length peaks as a Markdown table (docs/memory-model.md, through scripts/figures.py)."""
    lines = ["| run | card | rows × tokens | allocated: measured / planned | reserved: measured / planned |",
             "|---|---|---|---|---|"]
    for r in moe(results):
        if not r["note"].startswith("rows of exactly"):
            continue
        part, card = r["source"].split(": ", 1)[1].split(" on ")
        shape = r["note"].removeprefix("rows of exactly ").replace(" tokens x ", " × ").split(" × ")
        pairs = [(r[k + "_gib"], r[f"planned_{k}_gib"]) for k in ("allocated", "reserved")]
        cells = [f"{m:.2f} / {p:.2f} ({100 * (p / m - 1):+.1f} %)" for m, p in pairs]
        lines.append(f"| {part} | {card} | {shape[1]} × {shape[0]} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def stored(results: Path = RESULTS) -> list[dict]:
    """Every stored peak with its plan (see the module doc)."""
    return grid(results) + sharded(results) + packing(results) + speed(results) + loader(results)


def main() -> None:
    print_table(moe(), ["source", "note", "allocated_gib", "planned_allocated_gib", "reserved_gib",
                        "planned_reserved_gib", "reserved_over_plan"])
    rows = sorted(stored(), key=lambda r: -(r["reserved_over_plan"] or 0))
    print_table(rows[:15], ["source", "phase", "calibration", "allocated_gib", "reserved_gib", "planned_allocated_gib",
                            "planned_reserved_gib", "reserved_over_plan"])
    for phase in ("train", "load"):
        group = [r for r in rows if r["phase"] == phase]
        worst = max(group, key=lambda r: r["reserved_over_plan"])
        print(f"{phase}: {len(group)} peaks; reserved/plan at most {worst['reserved_over_plan']:.3f} "
              f"({worst['source']}); allocated/plan at most "
              f"{max(r['allocated_over_plan'] for r in group if r['allocated_over_plan']):.3f}")


if __name__ == "__main__":
    main()
