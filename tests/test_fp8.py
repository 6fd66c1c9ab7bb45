"""FP8's evidence: recommend() may say "measured" only where it was, and the table is the measurement file."""
import json
from pathlib import Path

from nbkit.fp8 import FP8_MEASURED, fp8_copy_gib, fp8_evidence
from nbkit.specs import spec_for

ROOT = Path(__file__).resolve().parent.parent
LLAMA_8B = "unsloth/Meta-Llama-3.1-8B-Instruct"


def test_fp8_is_never_called_measured_at_a_size_that_was_not():
    """14B was never measured: the reason says what it is expected from; a size between two measured ones that
    disagree is not picked at all."""
    big = fp8_evidence(spec_for("unsloth/Qwen3-14B"), 2048, 4)
    assert big == (True, "FP8 LoRA is expected faster from 1.17× on the Llama-3.1-8B shape (8.0B) at 2048 × 4 "
                         "tokens per step, H100 (not measured at 14.8B)")
    assert fp8_evidence(spec_for("unsloth/Llama-3.2-3B-Instruct"), 2048, 4) == (
        False, "FP8 was not measured at 3.2B parameters")
    # few tokens per step: the 8B measurement at 512 x 8 says slower
    assert fp8_evidence(spec_for(LLAMA_8B), 512, 8)[0] is False


def test_fp8_table_is_the_measurement_file():
    rows = json.loads((ROOT / "bench/results/fp8_vs_bf16.json").read_text())["rows"]
    measured = {(r["arch"], r["seq"], r["batch"]): round(r["fp8_speedup"], 3) for r in rows}
    table = {({"Llama-3.2-1B": "1b", "Llama-3.1-8B": "8b"}[name], seq, batch): speedup
             for name, _b, seq, batch, speedup in FP8_MEASURED}
    assert table == measured


def test_the_fp8_copy_of_an_8b_model_by_hand():
    spec = spec_for(LLAMA_8B)
    # 1 byte a projection weight, embedding and untied LM head in bf16
    assert fp8_copy_gib(spec) == (6_979_321_856 + 2 * 2 * 128_256 * 4096) / 1024**3
