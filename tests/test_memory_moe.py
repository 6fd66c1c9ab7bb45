"""The memory model's mixture-of-experts and Gemma 3 terms against the peaks measured on the device
(bench/moe.py: bench/results/moe_fit.json, rehearsed cards on an H200, random weights of the curated configs)."""
import sys
from pathlib import Path

from nbkit.planning.config import RunConfig
from nbkit.planning.memory import estimate
from nbkit.specs import spec_for

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from stored_peaks import moe  # noqa: E402


def full_length_peaks():
    return [r for r in moe() if r["note"].startswith("rows of exactly")]


def test_no_moe_or_gemma3_peak_is_planned_more_than_5_percent_under():
    """Qwen3-MoE (16-bit and 4-bit), gpt-oss (4-bit, Unsloth's fused layout) and Gemma 3 4B (4-bit on a T4, which
    Unsloth trains in float32), each at 1, 4 and 8 rows of 2048 tokens: allocated and reserved within -5 %."""
    rows = full_length_peaks()
    assert {r["source"].split(" ")[2] for r in rows} == {"qwen3moe", "gptoss", "gemma3"} and len(rows) == 12
    for r in rows:
        assert r["planned_allocated_gib"] >= 0.95 * r["allocated_gib"], r
        assert r["planned_reserved_gib"] >= 0.95 * r["reserved_gib"], r


def test_qwen3_moe_and_gemma3_are_planned_within_15_percent_over():
    """The issue's band (-5 % ... +15 %) holds for Qwen3-MoE and Gemma 3; gpt-oss is planned up to 30 % over at small
    batches (docs/memory-model.md), which this test leaves out on purpose."""
    for r in full_length_peaks():
        if "gptoss" not in r["source"]:
            assert r["planned_reserved_gib"] <= 1.15 * r["reserved_gib"], r
            assert r["planned_allocated_gib"] <= 1.15 * r["allocated_gib"], r


def test_a_card_without_bf16_doubles_the_activations_only_where_unsloth_trains_in_float32():
    cfg = RunConfig(model="x", quantization="4bit", max_seq_length=2048, batch_size=4, output_dir="x")
    for model, doubled in (("unsloth/gemma-3-4b-it", True), ("unsloth/Qwen3-30B-A3B-Instruct-2507", True),
                           ("unsloth/Meta-Llama-3.1-8B-Instruct", False)):
        spec = spec_for(model)
        t4, bf16 = estimate(cfg, spec, bf16=False), estimate(cfg, spec, bf16=True)
        assert t4.activations == (2 if doubled else 1) * bf16.activations, model


def test_moe_weights_are_planned_in_the_precision_the_experts_are_held():
    """Unsloth holds Qwen3-MoE's experts in 4-bit (measured: 4.9 GiB allocated after loading the 5.6B 8-layer model
    in 4-bit, 11.2 GiB in 16-bit): the plan's weights follow, and the 30.5B model's 4-bit weights are far from
    the 3.3B the spec once counted."""
    import json

    runs = {r["part"]: r for r in json.loads((ROOT / "bench/results/moe_fit.json").read_text())["results"]
            if r["arch"] == "qwen3moe" and r["part"].startswith("shapes")}
    from nbkit.specs import from_config_dict

    spec = from_config_dict(runs["shapes_4bit"]["spec"])
    for quant in ("4bit", "16bit"):
        cfg = RunConfig(model="x", quantization=quant, max_seq_length=2048, batch_size=1, output_dir="x")
        planned = estimate(cfg, spec).load
        measured = runs[f"shapes_{quant}"]["shapes"][0]["load_allocated_gib"]
        assert measured <= planned <= 1.15 * measured, (quant, planned, measured)
    full = estimate(RunConfig(model="x", quantization="4bit", output_dir="x"), spec_for(
        "unsloth/Qwen3-30B-A3B-Instruct-2507"))
    assert full.weights > 15


def test_full_size_runs_at_their_planned_batch_are_planned_inside_the_band():
    """Models the terms were not fitted on, at full size (bench/moe_full.py: gpt-oss-20b at all 24 layers on a
    rehearsed RTX 4090, Gemma 3 12B at all 48 on a rehearsed T4), planned by today's code from each run's stored
    spec and settings: within -5 % ... +15 % of the process's peaks, allocated and reserved. The runs whose
    planned batch ran out of memory (Qwen3-MoE, Mixtral: docs/memory-model.md, "Known gap") have no peak at that
    batch to compare with and are left out, by name."""
    import json

    from nbkit.planning.cards import planned_gpu
    from nbkit.specs import from_config_dict

    runs = [r for r in json.loads((ROOT / "bench/results/moe_full.json").read_text())["results"]
            if r["part"] == "full"]
    trained_as_planned = [r for r in runs if not any(n.startswith("out of GPU memory") for n in r["report"]["notes"])]
    assert sorted(r["arch"] for r in trained_as_planned) == ["gemma3-12b", "gptoss"]
    for r in trained_as_planned:
        plan = estimate(RunConfig(**r["config"]), from_config_dict(r["spec"]), "unsloth",
                        bf16=planned_gpu(r["card"]).bf16)
        for planned, measured in ((plan.allocated, r["process_allocated_gib"]),
                                  (plan.reserved, r["process_reserved_gib"])):
            assert 0.95 * measured <= planned <= 1.15 * measured, (r["arch"], planned, measured)


def test_a_plan_known_to_fall_short_says_so_in_its_reason():
    """Qwen3-MoE and Mixtral ran out of memory at their planned batch in the whole run (the known gap): their
    reason says what nbkit does then; gpt-oss and a dense model, whose runs stayed inside the plan, say nothing."""
    from nbkit.planning.cards import planned_gpu
    from nbkit.planning.recommend import recommend

    said = {m: "halves the batch" in recommend(spec_for(m), planned_gpu("H100")).reason
            for m in ("unsloth/Qwen3-30B-A3B-Instruct-2507", "unsloth/Mixtral-8x7B-Instruct-v0.1-bnb-4bit",
                      "unsloth/gpt-oss-20b", "unsloth/Meta-Llama-3.1-8B-Instruct")}
    assert said == {"unsloth/Qwen3-30B-A3B-Instruct-2507": True,
                    "unsloth/Mixtral-8x7B-Instruct-v0.1-bnb-4bit": True,
                    "unsloth/gpt-oss-20b": False, "unsloth/Meta-Llama-3.1-8B-Instruct": False}
