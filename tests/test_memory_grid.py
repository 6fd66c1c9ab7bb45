"""The memory grid (bench/grid.py, bench/results/grid*.json) re-checked against the current formulas.

recommend()'s settings for nine architectures on five real cards were loaded, probed at full length and trained on
real-length rows under each card's rehearsal on an H100/H200. A change to the formulas or constants that
under-predicts a measured peak, or that makes recommend() pick more than was shown to train, fails here.
"""
import json
import sys
from pathlib import Path

import pytest

from nbkit.planning import memory
from nbkit.planning.cards import card, planned_gpu
from nbkit.planning.recommend import recommend
from nbkit.specs import spec_for

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "bench"))

from fit_memory import (_errors_with, fit, fit_factors, fit_fragmentation, fit_score_bytes,  # noqa: E402
                        grid_files, grid_runs, leave_one_out, loads, real_lengths, records)
from stored_peaks import stored  # noqa: E402
from grid import ARCHS, GRID_ARCHS, GRID_CARDS  # noqa: E402


@pytest.fixture(scope="module")
def runs():
    return grid_runs()


def test_the_grid_is_nine_architectures_on_five_cards(runs):
    assert {r["arch"] for r in runs} == set(GRID_ARCHS)
    cards = {c for r in runs for c in r["cards"]}
    assert cards == set(GRID_CARDS)
    assert {r["config"]["quantization"] for r in runs} == {"4bit", "16bit", "fp8"}
    assert {r["bf16"] for r in runs} == {True, False}  # the T4 rehearsals trained in fp16


def test_what_recommend_picks_today_was_shown_to_train(runs):
    """Every (architecture, card) pick is either "does not fit" or covered by a run that trained: same model and
    precision, at least the same length, rank and batch (memory grows with each), under a cap no larger than the
    card's."""
    for arch in GRID_ARCHS:
        spec = spec_for(ARCHS[arch])
        for name in GRID_CARDS:
            gpu = planned_gpu(name)
            rec = recommend(spec, gpu)
            if not rec.fits:  # even 4-bit, batch 1, 512 tokens is predicted past the margin
                assert not memory.fits(rec.breakdown, gpu), (arch, name)
                continue
            c = rec.config
            covered = [r for r in runs if r["arch"] == arch and r["bf16"] == gpu.bf16
                       and r["config"]["quantization"] == c.quantization
                       and r["config"]["max_seq_length"] >= c.max_seq_length
                       and r["config"]["batch_size"] >= c.batch_size and r["config"]["lora_r"] >= c.lora_r
                       and card(r["card"]).usable_gib <= gpu.usable_gib + 1e-9]
            assert covered, (arch, name, rec.summary())


@pytest.mark.parametrize("half", [0, 1])
def test_a_fit_on_half_the_architectures_predicts_the_other_half(half):
    """act_gc fitted on every other grid architecture (and the transformers records) predicts the allocated probe
    peaks of the rest within -5 % ... +15 % (Gemma 2 aside: its score term is fitted on itself alone)."""
    recs = records()
    archs = sorted({r["arch"] for r in recs if r.get("grid") and r["arch"] != "gemma2-9b"})
    held_archs = set(archs[half::2])
    fitted = fit([r for r in recs if not (r.get("grid") and r["arch"] in held_archs)])
    held = [r for r in recs if r.get("grid") and r["arch"] in held_archs]
    e = _errors_with(held, fitted)
    assert len(held) >= 10 and -5 <= min(e) and max(e) <= 15, (sorted(held_archs), min(e), max(e))


def test_every_stored_peak_is_inside_its_plan():
    """Every peak stored in bench/results (the grid, the sharded runs, the packed runs, the speed runs, the loaders):
    what the allocator reserved is within the planned reservation, what tensors held within the planned allocation,
    and no load took more than its planned load."""
    rows = stored()
    assert len(rows) >= 130 and {r["calibration"] for r in rows} >= {"unsloth", "unsloth-kbit", "transformers-fsdp"}
    for r in rows:
        assert r["reserved_gib"] <= r["planned_reserved_gib"] + 1e-9, r
        assert r["allocated_gib"] is None or r["allocated_gib"] <= r["planned_allocated_gib"] + 1e-9, r


def test_every_load_is_predicted_within_12_percent():
    rows = loads()
    assert {r["quant"] for r in rows} == {"4bit", "16bit", "fp8"}
    assert all(0 <= r["error_pct"] <= 12 for r in rows), [r for r in rows if not 0 <= r["error_pct"] <= 12]


def test_reserved_stays_within_every_card_and_nothing_ran_out(runs):
    for r in runs:
        usable = min(card(c).usable_gib for c in r["cards"])
        assert max(r["probe_reserved_gib"], r["train_reserved_gib"], r["load_reserved_gib"]) <= usable, r["arch"]
        assert r["probe_trained"] and r["notes"] == [] and r["losses_finite"] and r["same_as_planned"]
        # Unsloth trains padding-free except where the attention needs padded rows (Gemma 2's softcapping)
        assert r["padding_free"] == (not spec_for(r["model"]).softcapped_attention or r["config"]["batch_size"] == 1)


def test_real_lengths_stay_under_the_plan():
    rows = real_lengths()
    assert all(r["allocated_gib"] <= r["planned_gib"] for r in rows)
    # where scores are materialised the plan's reservation covers the measured one too (SCORE_FRAGMENTATION)
    gemma = [r for r in rows if r["arch"] == "gemma2-9b"]
    assert gemma and all(max(r["reserved_gib"], r["probe_reserved_gib"]) <= r["planned_reserved_gib"] for r in gemma)
    assert max(r["below_plan_pct"] for r in rows) > 20  # real data leaves room the plan keeps for the worst case


def test_the_constants_are_what_the_fitting_script_fits():
    """bench/fit_memory.py fits act_gc per calibration and SCORE_BYTES; the shipped constants are its output, so a
    new measurement that the formulas under-predict fails here until the fit is rerun."""
    recs = records()
    fitted = fit(recs)
    assert set(fitted) == {"unsloth", "unsloth-kbit", "unsloth-fp8", "transformers", "transformers-kbit"}
    assert fitted == {key: memory.CALIBRATION[key].act_gc for key in fitted}
    assert fit_score_bytes(recs, fitted) == memory.SCORE_BYTES
    assert fit_fragmentation() == memory.SCORE_FRAGMENTATION
    factors = fit_factors()
    assert factors == {key: {"reserve_factor": memory.CALIBRATION[key].reserve_factor,
                             "load_factor": memory.CALIBRATION[key].load_factor} for key in factors}


def test_the_stated_accuracy_is_recomputed_from_the_records():
    """docs/memory-model.md quotes leave-one-architecture-out errors from calibration_fit.json: they must be what
    the records give today."""
    saved = json.loads((RESULTS / "calibration_fit.json").read_text())["leave_one_architecture_out"]
    now = leave_one_out(records())

    def key(r):
        over = r["reserved_over_plan"]
        return r["arch"], round(r["min_error_pct"], 6), round(r["max_error_pct"], 6), over and round(over, 6)

    assert [key(r) for r in now] == [key(r) for r in saved]
    # every constant refitted per fold: Gemma 2, alone in materialising scores, is under-predicted without itself
    gemma = next(r for r in now if r["arch"] == "gemma2-9b")
    assert gemma["score_bytes_without_it"] == 0.0 and gemma["min_error_pct"] < -10


def test_the_grid_plans_are_what_the_cards_give():
    """The saved plans were made for each card as nbkit plans it (its usable memory and abilities)."""
    plans = [p for f in grid_files() for p in json.loads(f.read_text())["plans"]]
    for p in plans:
        assert p["usable_gib"] == pytest.approx(card(p["card"]).usable_gib)
        assert p["bf16"] == card(p["card"]).bf16
