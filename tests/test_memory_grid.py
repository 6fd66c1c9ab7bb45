"""The memory grid (bench/grid.py, bench/results/grid*.json) re-checked against the current formulas.

recommend()'s settings for nine architectures on five real cards were loaded, probed at full length and trained on
real-length rows under each card's rehearsal on an H100/H200. A change to the formulas or constants that
under-predicts a measured peak, or that makes recommend() pick more than was shown to train, fails here.
"""
import json
import sys
from pathlib import Path

import pytest

from nbkit import memory
from nbkit.cards import card, planned_gpu
from nbkit.recommend import recommend
from nbkit.specs import spec_for

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT / "bench"))

from fit_memory import (errors, fit, fit_fragmentation, fit_score_bytes, grid_files, grid_records,  # noqa: E402
                        grid_runs, leave_one_out, loads, real_lengths, records)
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
    """Every (architecture, card) pick is either "does not fit" or covered by a run that trained: same model,
    precision and length, at least the same rank and batch (memory grows with both), under a cap no larger than
    the card's."""
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
                       and (r["config"]["quantization"], r["config"]["max_seq_length"])
                       == (c.quantization, c.max_seq_length)
                       and r["config"]["batch_size"] >= c.batch_size and r["config"]["lora_r"] >= c.lora_r
                       and card(r["card"]).usable_gib <= gpu.usable_gib + 1e-9]
            assert covered, (arch, name, rec.summary())


def test_every_probe_peak_is_predicted_within_12_percent():
    """Training on rows that fill max_seq_length (the plan's case): +0...+12 % of the allocated peak."""
    recs = grid_records()
    assert len(recs) >= 30
    e = errors(recs)
    assert min(e) >= 0 and max(e) <= 12, (min(e), max(e))


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


def test_the_stated_accuracy_is_recomputed_from_the_records():
    """docs/memory-model.md quotes leave-one-architecture-out errors from calibration_fit.json: they must be what
    the records give today."""
    saved = json.loads((RESULTS / "calibration_fit.json").read_text())["leave_one_architecture_out"]
    now = leave_one_out(records())
    assert [(r["arch"], round(r["min_error_pct"], 6), round(r["max_error_pct"], 6)) for r in now] == \
        [(r["arch"], round(r["min_error_pct"], 6), round(r["max_error_pct"], 6)) for r in saved]
    assert min(r["min_error_pct"] for r in now) > -1.0  # the worst unseen architecture: under by less than 1 %


def test_the_grid_plans_are_what_the_cards_give():
    """The saved plans were made for each card as nbkit plans it (its usable memory and abilities)."""
    plans = [p for f in grid_files() for p in json.loads(f.read_text())["plans"]]
    for p in plans:
        assert p["usable_gib"] == pytest.approx(card(p["card"]).usable_gib)
        assert p["bf16"] == card(p["card"]).bf16
