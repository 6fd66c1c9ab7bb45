"""FP8's evidence: recommend() may say "measured" only where it was, and the table is the measurement file."""
import json
from pathlib import Path

from nbkit.planning.fp8 import FP8_MEASURED, fp8_copy_gib, fp8_evidence
from nbkit.specs import spec_for

ROOT = Path(__file__).resolve().parent.parent
LLAMA_8B = "unsloth/Meta-Llama-3.1-8B-Instruct"


def test_fp8_is_never_called_measured_at_a_size_that_was_not():
    """Measured sizes are quoted as measured, bigger ones as "expected from" the largest measured, and a size
    below every measured one is not picked at all."""
    assert fp8_evidence(spec_for("unsloth/Qwen3-14B"), 2048, 4) == (
        False, "FP8 LoRA was measured 0.84× on the Qwen2.5-14B shape (14.8B) at 2048 × 4 tokens per step, H100")
    assert fp8_evidence(spec_for("unsloth/Qwen2.5-32B-Instruct-bnb-4bit"), 4096, 8) == (
        False, "FP8 LoRA is expected faster from 0.91× on the Qwen2.5-14B shape (14.8B) at 4096 × 8 tokens per "
               "step, H100 (not measured at 32.8B)")
    assert fp8_evidence(spec_for("unsloth/Llama-3.2-3B-Instruct"), 2048, 4) == (
        False, "FP8 was not measured at 3.2B parameters")
    # the nearest tokens per step decides: 8B was measured at 2048 x 4 and 4096 x 8
    assert fp8_evidence(spec_for(LLAMA_8B), 512, 8)[1].startswith("FP8 LoRA was measured 0.83× on the Llama-3.1-8B")
    assert fp8_evidence(spec_for(LLAMA_8B), 4096, 6)[1].startswith("FP8 LoRA was measured 0.88× on the Llama-3.1-8B")
    assert fp8_evidence(spec_for("unsloth/Llama-3.2-1B-Instruct"), 4096, 8) == (
        False, "FP8 LoRA was measured 0.76× on the Llama-3.2-1B shape (1.2B) at 4096 × 8 tokens per step, H100")


def test_fp8_table_is_the_measurement_file():
    """FP8_MEASURED is the current rows of bench/results/fp8_vs_bf16.json (nbkit's padding-free batches); the
    session-2 rows (padded batches) stay in the file, marked not current, and out of the table."""
    rows = json.loads((ROOT / "bench/results/fp8_vs_bf16.json").read_text())["rows"]
    measured = {(r["arch"], r["seq"], r["batch"]): round(r["fp8_speedup"], 3) for r in rows if r["current"]}
    table = {({"Llama-3.2-1B": "1b", "Llama-3.1-8B": "8b", "Qwen2.5-14B": "qwen2.5-14b"}[name], seq, batch): speedup
             for name, _b, seq, batch, speedup in FP8_MEASURED}
    assert table == measured and len(table) == 6  # three sizes, two tokens-per-step levels each
    assert any(not r["current"] and r["fp8_speedup"] > 1.1 for r in rows)  # what session 2 measured, kept


def test_the_fp8_copy_of_an_8b_model_by_hand():
    spec = spec_for(LLAMA_8B)
    # 1 byte a projection weight, embedding and untied LM head in bf16
    assert fp8_copy_gib(spec) == (6_979_321_856 + 2 * 2 * 128_256 * 4096) / 1024**3


def test_a_size_within_20_percent_of_a_measured_one_borrows_its_measurement():
    """The 8B measurement stands for 6.4-9.6B parameters: a Llama-8B shape with more layers is "measured" up to
    that edge and unmeasured beyond it (between 8B and 14B, where neither is near)."""
    from dataclasses import replace

    llama = spec_for(LLAMA_8B)
    inside, outside = replace(llama, num_hidden_layers=38), replace(llama, num_hidden_layers=40)
    assert 9.0e9 < inside.total_params < 1.2 * 8.03e9 < outside.total_params < 0.8 * 14.77e9
    assert fp8_evidence(inside, 2048, 4)[1].startswith("FP8 LoRA was measured 0.83× on the Llama-3.1-8B shape")
    assert fp8_evidence(outside, 2048, 4) == (False, f"FP8 was not measured at {outside.total_params / 1e9:.1f}B "
                                                     "parameters")
    # tokens per step decide before sequence length: 4096 x 2 has the tokens of 2048 x 4, so that row is quoted
    # although the 4096 x 8 row has its sequence length
    assert fp8_evidence(llama, 4096, 2)[1].endswith("at 2048 × 4 tokens per step, H100")
