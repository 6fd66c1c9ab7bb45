"""The measured figures quoted in README.md and docs/, computed from the result files in bench/results/.

In the Markdown a figure is written `<!--fig:NAME-->VALUE<!--/fig-->` (only VALUE shows when rendered).
    python scripts/figures.py          rewrite every marked figure from its result file
    python scripts/figures.py --check  exit 1, naming each figure whose text differs from its file
tests/test_figures.py runs the check, so a figure edited by hand, or a result re-measured without updating the
prose, fails CI.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]
MARKER = re.compile(r"<!--fig:([a-z0-9_]+)-->(.*?)<!--/fig-->", re.S)


def _summary(name: str, variant: str, key: str) -> Callable[[], float]:
    return lambda: next(r[key] for r in _load(name)["summary"] if r["variant"] == variant)


def _span(name: str, variant: str, key: str = "tokens_per_s") -> Callable[[], str]:
    """The min-max of a figure over a variant's repeats, written "a–b"."""
    return lambda: "–".join(f"{v:,.0f}" for v in _summary(name, variant, key + "_range")())


def _ratio(name: str, key: str) -> Callable[[], float]:
    return lambda: _load(name)["ratios"][key]


def _import(mode: str, key: str) -> Callable[[], float]:
    return lambda: next(r[key] for r in _load("import_time.json")["rows"] if r["mode"] == mode)


def _parity(name: str, key: str) -> Callable[[], float]:
    return lambda: _load(name)["summary"][key]["max_rel_diff"] * 100


def _fp8(arch: str, seq: int, batch: int, current: bool = True) -> Callable[[], float]:
    return lambda: next(r["fp8_speedup"] for r in _load("fp8_vs_bf16.json")["rows"]
                        if (r["arch"], r["seq"], r["batch"], r.get("current", False)) == (arch, seq, batch, current))


GRID_NAMES = {"1b": "Llama 3.2 1B", "3b": "Llama 3.2 3B", "8b": "Llama 3.1 8B", "qwen2.5-7b": "Qwen2.5 7B",
              "qwen2.5-14b": "Qwen2.5 14B", "qwen3-8b": "Qwen3 8B", "mistral-7b": "Mistral 7B",
              "gemma2-9b": "Gemma 2 9B", "phi3.5": "Phi-3.5 mini"}


def _grid_table() -> str:
    """The memory grid as a Markdown table: every run of bench/grid.py against today's formulas."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from fit_memory import grid_runs
    from nbkit import RunConfig
    from nbkit.planning.cards import card
    from nbkit.planning.memory import estimate
    from nbkit.specs import spec_for

    runs = grid_runs(RESULTS)
    runs.sort(key=lambda r: (list(GRID_NAMES).index(r["arch"]), min(card(c).usable_gib for c in r["cards"])))
    lines = ["| model | card(s) (usable GiB) | settings | load: measured / predicted | full-length rows: measured / "
             "predicted | real-length rows: allocated / reserved |", "|---|---|---|---|---|---|"]
    for r in runs:
        c = r["config"]
        # the grid's checkpoints were random weights quantized to plain 4-bit, not Unsloth's dynamic quants
        part = estimate(RunConfig.from_dict(c), replace(spec_for(r["model"]), dynamic_4bit=""))
        cards = ", ".join(f"{n} ({card(n).usable_gib:.2f})" for n in r["cards"])
        dtype = "" if r["bf16"] else ", fp16"
        lines.append(f"| {GRID_NAMES[r['arch']]} | {cards} | {c['quantization']}{dtype}, {c['batch_size']} × "
                     f"{c['max_seq_length']} | {r['load_allocated_gib']:.2f} / {part.load:.2f} | "
                     f"{r['probe_allocated_gib']:.2f} / {part.allocated:.2f} "
                     f"({100 * (part.allocated / r['probe_allocated_gib'] - 1):+.1f} %) | "
                     f"{r['train_allocated_gib']:.2f} / {r['train_reserved_gib']:.2f} |")
    return "\n".join(lines)


def _moe_table() -> str:
    """Mixture-of-experts and Gemma 3 full-length peaks against today's plan (bench/stored_peaks.moe_table)."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    from stored_peaks import moe_table

    return moe_table(RESULTS)


def _moe_full(name: str) -> Callable[[], str]:
    """A table of the full-size runs (bench/moe_tables.py: full_table, merged_table, raw_table)."""
    def compute() -> str:
        sys.path.insert(0, str(ROOT))
        sys.path.insert(0, str(ROOT / "bench"))
        import moe_tables

        return getattr(moe_tables, name)(RESULTS)
    return compute


def _fp8_table() -> str:
    """FP8 vs bf16 LoRA with padding-free batches (bench/fp8_vs_bf16.py's current rows) as a Markdown table."""
    lines = ["| model | seq × batch | bf16 tok/s | FP8 tok/s | FP8 / bf16 (min–max over repeats) | repeats |",
             "|---|---|---|---|---|---|"]
    rows = [r for r in _load("fp8_vs_bf16.json")["rows"] if r["current"]]
    for r in sorted(rows, key=lambda r: (list(GRID_NAMES).index(r["arch"]), r["tokens"])):
        low, high = r["fp8_speedup_range"]
        lines.append(f"| {GRID_NAMES[r['arch']]} | {r['seq']} × {r['batch']} | {r['bf16_tok_s']:,.0f} | "
                     f"{r['fp8_tok_s']:,.0f} | {r['fp8_speedup']:.2f}× ({low:.2f}–{high:.2f}) | {r['repeats']} |")
    return "\n".join(lines)


def _sharded(arch: str, variant: str, key: str, cap=None) -> Callable[[], float]:
    """Rank 0's figure of one sharded-bench run (bench/results/sharded_<arch>.json); cap picks the --cap run."""
    return lambda: next(r[key] for r in _load(f"sharded_{arch}.json")["runs"]
                        if r["variant"] == variant and r.get("rank", 0) == 0 and (cap is None or r.get("cap_arg") == cap))


def _predicted_now(arch: str, variant: str = "nbkit", cap=None, reserved: bool = False) -> Callable[[], float]:
    """What the current memory model plans per GPU for that run, its allocation or (`reserved`) its reservation
    (tests/test_sharding.py checks it too)."""
    def compute() -> float:
        sys.path.insert(0, str(ROOT))
        from nbkit import RunConfig
        from nbkit.planning.memory import estimate
        from nbkit.specs import spec_for

        data = _load(f"sharded_{arch}.json")
        run = next(r for r in data["runs"] if r["variant"] == variant and r.get("rank", 0) == 0
                   and (cap is None or r.get("cap_arg") == cap))
        cfg = RunConfig(model=data["model_shape"], quantization="4bit", max_seq_length=run["seq"],
                        batch_size=run["batch"], lora_r=16, parallelism=run["parallelism"])
        part = estimate(cfg, spec_for(data["model_shape"]), run["backend"], processes=run["processes"])
        return part.peak_reserved if reserved else part.peak_reserved - part.cache
    return compute


def _loo() -> list[dict]:
    return _load(FIT)["leave_one_architecture_out"]


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


FIRST = "throughput_1b_4bit_first_step.json"
MIXED = "throughput_1b_4bit_first_step_mixed.json"
DISPLAY = "throughput_8b_4bit_display.json"
LIVE = "throughput_8b_4bit_display_live.json"
FIT = "calibration_fit.json"
DDP = "ddp_scaling_1b_16bit_32k.json"  # 4096 x 8 tokens per GPU a step, 1 and 2 GPUs alternating
DDP_SHORT = "ddp_scaling_1b_16bit.json"  # 2048 x 4: steps too short to pin the scaling down
SESSION = "session_rehearsal.json"
BIG = "data_big_file.json"


def _big(variant: str, key: str) -> float:
    return next(r[key] for r in _load(BIG)["summary"] if r["variant"] == variant)
# name: (how to compute it from the results, how it is written)
def _packing(arch: str, variant: str, key: str):
    """A figure of one epoch at `arch` (bench/packing.py): a median over the repeats, or "a–b" for a `_range` key."""
    def compute():
        row = next(r for r in _load(f"packing_{arch}.json")["summary"] if r["variant"] == variant)
        return row[key] if not key.endswith("_range") else "–".join(f"{v:.1f}" for v in row[key])
    return compute


def _packing_plan(arch: str, key: str) -> Callable[[], float]:
    """nbkit's own runs of one epoch: its plan (`predicted_reserved_gib`) or what it reserved, the largest of the
    repeats."""
    return lambda: max(r[key] for r in _load(f"packing_{arch}.json")["rows"] if r["variant"] == "nbkit")


PACKING_FIGURES = {
    f"pack_{arch}_{name}_{key}": (_packing(arch, variant, field), fmt)
    for arch in ("1b", "8b")
    for name, variant in (("nbkit", "nbkit"), ("raw", "raw"), ("rawpacked", "raw-packed"))
    for key, field, fmt in (("s", "epoch_s", "{:.1f} s"), ("range", "epoch_s_range", "{}"),
                            ("loss", "held_out_loss", "{:.3f}"), ("steps", "steps", "{:d}"),
                            ("resv", "peak_reserved_gib", "{:.2f}"))
}
PACKING_FIGURES.update({f"pack_{arch}_plan": (_packing_plan(arch, "predicted_reserved_gib"), "{:.2f}")
                        for arch in ("1b", "8b")})

FIGURES: dict[str, tuple[Callable[[], float], str]] = {
    **PACKING_FIGURES,
    "qlora8b_vs_hf_speed": (_ratio("throughput_8b_4bit.json", "nbkit_vs_hf_speed"), "{:.2f}×"),
    "qlora8b_vs_hf_peak": (_ratio("throughput_8b_4bit.json", "nbkit_vs_hf_peak"), "{:.2f}×"),
    "qlora8b_nbkit_vs_raw": (_ratio("throughput_8b_4bit.json", "nbkit_vs_raw_speed"), "{:.2f}×"),
    "qlora8b_repeats": (_summary("throughput_8b_4bit.json", "hf", "repeats"), "{:d}"),
    "qlora8b_nbkit_tps": (_span("throughput_8b_4bit.json", "nbkit"), "{}"),
    "qlora8b_raw_tps": (_span("throughput_8b_4bit.json", "raw"), "{}"),
    "qlora8b_hf_tps": (_span("throughput_8b_4bit.json", "hf"), "{}"),
    "qlora8b_nbkit_peak": (_summary("throughput_8b_4bit.json", "nbkit", "peak_gib"), "{:.2f}"),
    "qlora8b_raw_peak": (_summary("throughput_8b_4bit.json", "raw", "peak_gib"), "{:.2f}"),
    "qlora8b_hf_peak": (_summary("throughput_8b_4bit.json", "hf", "peak_gib"), "{:.2f}"),
    "first_raw_s": (_summary(FIRST, "raw", "first_step_s"), "{:.2f} s"),
    "first_nbkit_s": (_summary(FIRST, "nbkit", "first_step_s"), "{:.2f} s"),
    "ttfs_raw_s": (_summary(FIRST, "raw", "start_to_first_step_s"), "{:.1f} s"),
    "ttfs_nbkit_s": (_summary(FIRST, "nbkit", "start_to_first_step_s"), "{:.1f} s"),
    "first_raw_mixed_s": (_summary(MIXED, "raw", "first_step_s"), "{:.2f} s"),
    "first_nbkit_mixed_s": (_summary(MIXED, "nbkit", "first_step_s"), "{:.2f} s"),
    "ttfs_raw_mixed_s": (_summary(MIXED, "raw", "start_to_first_step_s"), "{:.1f} s"),
    "ttfs_nbkit_mixed_s": (_summary(MIXED, "nbkit", "start_to_first_step_s"), "{:.1f} s"),
    "steady_nbkit_vs_raw": (_ratio(FIRST, "nbkit_vs_raw_speed"), "{:.2f}×"),
    "display_overhead_pct": (lambda: _load(DISPLAY)["ratios"]["display_overhead"] * 100, "{:+.1f} %"),
    "display_on_tps": (_summary(DISPLAY, "nbkit", "tokens_per_s"), "{:,.0f}"),
    "display_off_tps": (_summary(DISPLAY, "nbkit-quiet", "tokens_per_s"), "{:,.0f}"),
    # the notebook's live view: widgets, the curve redrawn every 2 s on its own thread (bench/throughput.py)
    "live_on_tps": (_summary(LIVE, "nbkit-live", "tokens_per_s"), "{:,.0f}"),
    "live_off_tps": (_summary(LIVE, "nbkit-quiet", "tokens_per_s"), "{:,.0f}"),
    "live_on_range": (_span(LIVE, "nbkit-live"), "{}"),
    "live_off_range": (_span(LIVE, "nbkit-quiet"), "{}"),
    "live_redraws": (lambda: "–".join(str(n) for n in sorted({r["display"]["redraws"] for r in _load(LIVE)["rows"]
                                                              if r["variant"] == "nbkit-live"})), "{}"),
    "import_gpu_check_s": (_import("background", "gpu_check_shown"), "{:.1f} s"),
    "import_form_s": (_import("background", "form_shown"), "{:.1f} s"),
    "import_engine_s": (_import("background", "engine_ready"), "{:.1f} s"),
    "import_blocking_s": (_import("blocking", "form_shown"), "{:.1f} s"),
    "import_blocking_gpu_check_s": (_import("blocking", "gpu_check_shown"), "{:.1f} s"),
    "import_blocking_engine_s": (_import("blocking", "engine_ready"), "{:.1f} s"),
    "parity4_raw_pct": (_parity("loss_parity_1b_4bit.json", "nbkit_vs_raw_unsloth"), "{:.2f} %"),
    "parity4_hf_pct": (_parity("loss_parity_1b_4bit.json", "unsloth_vs_transformers"), "{:.2f} %"),
    "fit_records": (lambda: sum(r["records"] for r in _load(FIT)["in_sample"]), "{:d}"),
    "fit_in_sample_min_pct": (lambda: min(r["min_error_pct"] for r in _load(FIT)["in_sample"]), "{:+.1f} %"),
    "fit_in_sample_max_pct": (lambda: max(r["max_error_pct"] for r in _load(FIT)["in_sample"]), "{:+.1f} %"),
    # leave one architecture out, every constant refitted without it (Gemma 2 apart: without it nothing fits its
    # score term, so it is quoted on its own)
    "loo_min_pct": (lambda: min(r["min_error_pct"] for r in _loo() if r["arch"] != "gemma2-9b"), "{:+.1f} %"),
    "loo_max_pct": (lambda: max(r["max_error_pct"] for r in _loo() if r["arch"] != "gemma2-9b"), "{:+.1f} %"),
    "loo_records": (lambda: sum(r["records"] for r in _loo() if r["arch"] != "gemma2-9b"), "{:d}"),
    "loo_archs": (lambda: sum(1 for r in _loo() if r["arch"] != "gemma2-9b"), "{:d}"),
    "loo_gemma_min_pct": (lambda: next(r["min_error_pct"] for r in _loo() if r["arch"] == "gemma2-9b"), "{:+.1f} %"),
    "loo_gemma_max_pct": (lambda: next(r["max_error_pct"] for r in _loo() if r["arch"] == "gemma2-9b"), "{:+.1f} %"),
    "loo_gemma_records": (lambda: next(r["records"] for r in _loo() if r["arch"] == "gemma2-9b"), "{:d}"),
    "loo_reserved_max_pct": (lambda: (max(r["reserved_over_plan"] for r in _loo() if r["reserved_over_plan"]) - 1)
                             * 100, "{:+.1f} %"),
    "reserve_unsloth_kbit": (lambda: _load(FIT)["factors"]["unsloth-kbit"]["reserve_factor"], "{:.2f}"),
    "reserve_unsloth": (lambda: _load(FIT)["factors"]["unsloth"]["reserve_factor"], "{:.2f}"),
    "reserve_fsdp": (lambda: _load(FIT)["factors"]["transformers-fsdp"]["reserve_factor"], "{:.2f}"),
    "load_factor_hf_kbit": (lambda: _load(FIT)["factors"]["transformers-kbit"]["load_factor"], "{:.2f}"),
    "sh8_planned_reserved": (_predicted_now("8b", reserved=True), "{:.2f}"),
    "sh70_planned_reserved": (_predicted_now("70b", reserved=True), "{:.2f}"),
    "load_min_pct": (lambda: min(r["error_pct"] for r in _load(FIT)["load"]), "{:+.1f} %"),
    "load_max_pct": (lambda: max(r["error_pct"] for r in _load(FIT)["load"]), "{:+.1f} %"),
    "grid_runs": (lambda: len(_load(FIT)["real_lengths"]), "{:d}"),
    "real_below_min_pct": (lambda: min(r["below_plan_pct"] for r in _load(FIT)["real_lengths"]), "{:.0f} %"),
    "real_below_max_pct": (lambda: max(r["below_plan_pct"] for r in _load(FIT)["real_lengths"]), "{:.0f} %"),
    "real_reserved_max_share": (lambda: max(max(r["reserved_gib"], r["probe_reserved_gib"]) / r["usable_gib"]
                                            for r in _load(FIT)["real_lengths"]) * 100, "{:.0f} %"),
    "score_bytes": (lambda: _load(FIT)["score_bytes"], "{:.1f}"),
    "score_fragmentation": (lambda: _load(FIT)["score_fragmentation"], "{:.1f}"),
    "act_kbit": (lambda: _load(FIT)["fitted_act_gc"]["unsloth-kbit"], "{:.2f}"),
    "act_16bit": (lambda: _load(FIT)["fitted_act_gc"]["unsloth"], "{:.2f}"),
    "act_fp8": (lambda: _load(FIT)["fitted_act_gc"]["unsloth-fp8"], "{:.2f}"),
    "grid_table": (_grid_table, "\n{}\n"),
    "fp8_table": (_fp8_table, "\n{}\n"),
    "moe_table": (_moe_table, "\n{}\n"),
    "moe_full_table": (_moe_full("full_table"), "\n{}\n"),
    "moe_merged_table": (_moe_full("merged_table"), "\n{}\n"),
    "moe_raw_table": (_moe_full("raw_table"), "\n{}\n"),
    "fp8_1b_8k": (_fp8("1b", 2048, 4), "{:.2f}×"),
    "fp8_1b_32k": (_fp8("1b", 4096, 8), "{:.2f}×"),
    "fp8_8b_8k": (_fp8("8b", 2048, 4), "{:.2f}×"),
    "fp8_8b_32k": (_fp8("8b", 4096, 8), "{:.2f}×"),
    "fp8_14b_8k": (_fp8("qwen2.5-14b", 2048, 4), "{:.2f}×"),
    "fp8_14b_32k": (_fp8("qwen2.5-14b", 4096, 8), "{:.2f}×"),
    "fp8_8b_8k_padded": (_fp8("8b", 2048, 4, current=False), "{:.2f}×"),
    "sh8_nbkit_tps": (_sharded("8b", "nbkit", "tokens_per_s"), "{:,.0f}"),
    "sh8_plain_tps": (_sharded("8b", "plain", "tokens_per_s"), "{:,.0f}"),
    "sh8_nbkit_alloc": (_sharded("8b", "nbkit", "peak_allocated_gib"), "{:.2f}"),
    "sh8_plain_alloc": (_sharded("8b", "plain", "peak_allocated_gib"), "{:.2f}"),
    "sh8_nbkit_reserved": (_sharded("8b", "nbkit", "peak_reserved_gib"), "{:.2f}"),
    "sh8_plain_reserved": (_sharded("8b", "plain", "peak_reserved_gib"), "{:.2f}"),
    "sh8_predicted": (_predicted_now("8b"), "{:.2f}"),
    "sh32_alloc": (_sharded("32b", "nbkit", "peak_allocated_gib", 14.15), "{:.2f}"),
    "sh32_reserved": (_sharded("32b", "nbkit", "peak_reserved_gib", 14.15), "{:.2f}"),
    "sh32_predicted": (_predicted_now("32b", cap=14.15), "{:.2f}"),
    "sh32_tps": (_sharded("32b", "nbkit", "tokens_per_s", 14.15), "{:,.0f}"),
    "sh32_single_tps": (_sharded("32b", "single", "tokens_per_s"), "{:,.0f}"),
    "sh32_single_alloc": (_sharded("32b", "single", "peak_allocated_gib"), "{:.2f}"),
    "sh70_alloc": (_sharded("70b", "nbkit", "peak_allocated_gib"), "{:.2f}"),
    "sh70_reserved": (_sharded("70b", "nbkit", "peak_reserved_gib"), "{:.2f}"),
    "sh70_predicted": (_predicted_now("70b"), "{:.2f}"),
    "sh70_tps": (_sharded("70b", "nbkit", "tokens_per_s"), "{:,.0f}"),
    "sh70_single_tps": (_sharded("70b", "single", "tokens_per_s"), "{:,.0f}"),
    "sh70_single_alloc": (_sharded("70b", "single", "peak_allocated_gib"), "{:.2f}"),
    "sh70_single_predicted": (_predicted_now("70b", "single"), "{:.2f}"),
    "sh70_error_pct": (lambda: (_predicted_now("70b")() / _sharded("70b", "nbkit", "peak_allocated_gib")() - 1) * 100,
                       "{:+.0f} %"),
    "sh70_single_error_pct": (lambda: (_predicted_now("70b", "single")()
                                       / _sharded("70b", "single", "peak_allocated_gib")() - 1) * 100, "{:+.0f} %"),
    "sh8_ac_tps": (_sharded("8b_activation_ckpt", "nbkit", "tokens_per_s"), "{:,.0f}"),
    "sh8_ac_slower_pct": (lambda: (1 - _sharded("8b_activation_ckpt", "nbkit", "tokens_per_s")()
                                   / _sharded("8b_activation_ckpt", "plain", "tokens_per_s")()) * 100, "{:.0f} %"),
    "sh32_per_gpu_pct": (lambda: _sharded("32b", "nbkit", "tokens_per_s", 14.15)() / 2
                         / _sharded("32b", "single", "tokens_per_s")() * 100, "{:.0f} %"),
    "sh70_per_gpu_pct": (lambda: _sharded("70b", "nbkit", "tokens_per_s")() / 2
                         / _sharded("70b", "single", "tokens_per_s")() * 100, "{:.0f} %"),
    "ddp_scaling": (lambda: _load(DDP)["scaling"], "{:.2f}×"),
    "ddp_scaling_repeat_low": (lambda: min(_load(DDP)["scaling_per_repeat"]), "{:.3f}×"),
    "ddp_scaling_repeat_high": (lambda: max(_load(DDP)["scaling_per_repeat"]), "{:.3f}×"),
    "ddp_scaling_low": (lambda: _load(DDP)["scaling_p10_p90"][0], "{:.2f}×"),
    "ddp_scaling_high": (lambda: _load(DDP)["scaling_p10_p90"][1], "{:.2f}×"),
    "ddp_repeats": (lambda: len(_load(DDP)["scaling_per_repeat"]), "{:d}"),
    "ddp_steps": (lambda: _load(DDP)["rows"][0]["steady_steps"], "{:d}"),
    "ddp_step_s": (lambda: _load(DDP)["summary"][0]["median_step_s"], "{:.2f} s"),
    "ddp_1gpu_tps": (lambda: _load(DDP)["summary"][0]["tokens_per_s"], "{:,.0f}"),
    "ddp_2gpu_tps": (lambda: _load(DDP)["summary"][-1]["tokens_per_s"], "{:,.0f}"),
    "ddp_short_low": (lambda: _load(DDP_SHORT)["scaling_p10_p90"][0], "{:.2f}×"),
    "ddp_short_high": (lambda: _load(DDP_SHORT)["scaling_p10_p90"][1], "{:.2f}×"),
    "parity16_hf_pct": (lambda: _load("loss_parity_1b_16bit.json")["summary"]["max_rel_diff"] * 100, "{:.2f} %"),
    # a 200 MB JSONL with max_samples 16 (bench/data_big_file.py, CPU)
    "big_file_mb": (lambda: _load(BIG)["file_mb"], "{:.0f}"),
    "big_check16_s": (lambda: _big("check-16", "max_s"), "{:.2f} s"),
    "big_check16_mib": (lambda: _big("check-16", "max_added_mib"), "{:.0f}"),
    "big_prepare16_s": (lambda: _big("prepare-16", "max_s"), "{:.2f} s"),
    "big_prepare16_mib": (lambda: _big("prepare-16", "max_added_mib"), "{:.0f}"),
    "big_checkall_s": (lambda: _big("check-all", "median_s"), "{:.1f} s"),
    "big_checkall_mib": (lambda: _big("check-all", "median_added_mib"), "{:.0f}"),
    # a notebook session on a T4's memory (bench/session_rehearsal.py): reserved GiB after each pass / load
    "session_nb_reserved_1": (lambda: _load(SESSION)["notebook"]["passes"][0]["memory"]["reserved"], "{:.2f}"),
    "session_nb_reserved_2": (lambda: _load(SESSION)["notebook"]["passes"][1]["memory"]["reserved"], "{:.2f}"),
    "session_load_reserved_1": (lambda: _load(SESSION)["load"]["after_first"]["reserved"], "{:.2f}"),
    "session_load_reserved_2": (lambda: _load(SESSION)["load"]["after_second"]["reserved"], "{:.2f}"),
}


# how far CPU results move with the kernels torch picks (bench/cpu_spread.py): docs/portability.md's tolerances
SPREAD = "cpu_spread.json"


def _spread(pair: str, key: str) -> Callable[[], float]:
    def compute():
        c = _load(SPREAD)["fsdp_vs_ddp"][pair]
        return c["loss_rel_per_step"][0] if key == "step1" else c["adapters"][key] if key in c["adapters"] else c[key]
    return compute


FIGURES.update({
    f"spread_{name}_{short}": (_spread(pair, key), "{:.2e}" if key != "step1" else "{:.1g}")
    for name, pair in (("paths_avx512", "fsdp vs ddp, default"), ("paths_avx2", "fsdp vs ddp, avx2"),
                       ("ddp_kernels", "ddp, avx2 vs default"), ("fsdp_kernels", "fsdp, avx2 vs default"))
    for short, key in (("step1", "step1"), ("loss", "loss_rel_max"), ("b", "b_rel_norm"),
                       ("elem", "max_element_over_max_b"))
})
FIGURES.update({
    "spread_logits": (lambda: _load(SPREAD)["logits"]["avx2 vs default"]["rel_norm_max"], "{:.1e}"),
    "spread_logit_flips": (lambda: _load(SPREAD)["logits"]["avx2 vs default"]["argmax_changes"], "{:d}"),
    "spread_logit_positions": (lambda: _load(SPREAD)["logits"]["avx2 vs default"]["positions"], "{:d}"),
    "spread_logit_gap": (lambda: _load(SPREAD)["logits"]["avx2 vs default"]["smallest_top1_top2_gap_rel"], "{:.1e}"),
})


def value(name: str) -> str:
    compute, fmt = FIGURES[name]
    return fmt.format(compute())


def problems(documents=DOCUMENTS) -> list[str]:
    """Each marked figure whose text is not what its result file gives, and each unknown figure name."""
    found = []
    for doc in documents:
        if not doc.exists():
            continue
        for m in MARKER.finditer(doc.read_text()):
            name, text = m.group(1), m.group(2)
            if name not in FIGURES:
                found.append(f"{doc.name}: unknown figure {name!r}")
            elif text != value(name):
                found.append(f"{doc.name}: {name} reads {text!r}, its result file gives {value(name)!r}")
    return found


def rewrite(documents=DOCUMENTS) -> int:
    changed = 0
    for doc in documents:
        if not doc.exists():
            continue
        old = doc.read_text()
        new = MARKER.sub(lambda m: f"<!--fig:{m.group(1)}-->{value(m.group(1))}<!--/fig-->", old)
        if new != old:
            doc.write_text(new)
            changed += 1
    return changed


if __name__ == "__main__":
    if "--check" in sys.argv:
        bad = problems()
        print("\n".join(bad) or "every figure matches its result file")
        sys.exit(1 if bad else 0)
    print(f"rewrote {rewrite()} document(s)")
