import json
import sys
from pathlib import Path

import pytest

from nbkit import HardwareError, RunConfig
from nbkit.hardware import GpuInfo
from nbkit.memory import (CALIBRATION, SAFETY_MARGIN, WEIGHT_BYTES, check_fits, estimate, fits, largest_batch, recommend)
from nbkit.specs import from_config_dict, spec_for

ROOT = Path(__file__).resolve().parent.parent
LLAMA_1B = "unsloth/Llama-3.2-1B-Instruct"
LLAMA_8B = "unsloth/Meta-Llama-3.1-8B-Instruct"
GIB = 1024**3


def test_parameter_counts_match_the_published_models():
    assert spec_for(LLAMA_1B).total_params == 1_235_814_400
    assert spec_for(LLAMA_8B).total_params == 8_030_261_248
    # Unsloth printed "Trainable parameters = 11,272,192" for r=16 on all linear layers of Llama-3.2-1B
    assert spec_for(LLAMA_1B).lora_params(16) == 11_272_192


def test_weights_by_quantization():
    spec = spec_for(LLAMA_8B)
    embed = 2 * spec.embedding_params / GIB
    w16 = estimate(RunConfig(quantization="16bit"), spec).weights
    w4 = estimate(RunConfig(quantization="4bit"), spec).weights
    assert w16 == pytest.approx(spec.linear_params * 2 / GIB + embed)
    assert w4 == pytest.approx(spec.linear_params * WEIGHT_BYTES["4bit"] / GIB + embed)
    assert WEIGHT_BYTES["4bit"] == pytest.approx(0.5159, abs=1e-4)  # NF4 + double-quantized absmax
    # plain transformers keeps embeddings in fp32 next to 4-bit layers (peft's k-bit preparation)
    hf4 = estimate(RunConfig(quantization="4bit"), spec, backend="transformers").weights
    assert hf4 - w4 == pytest.approx(embed)


def test_a_small_case_by_hand():
    spec = from_config_dict(dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=True))
    assert spec.head_dim == 16 and spec.kv_dim == 32
    per_layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128
    assert spec.linear_params == 2 * per_layer
    assert spec.lora_params(8, ["q_proj"]) == 2 * 8 * (64 + 64)
    cfg = RunConfig(lora_r=8, batch_size=2, max_seq_length=100, quantization="16bit")
    part = estimate(cfg, spec, backend="unsloth")
    per_token = 2.0 * (4 * 64 + 2 * 64 + 2 * 32 + 4 * 128)
    # 200 tokens x the bytes a layer keeps per token x the layers' worth Unsloth keeps live (the calibration)
    assert part.activations == pytest.approx(200 * per_token * CALIBRATION["unsloth"].act_gc / GIB)
    assert part.total == pytest.approx(part.reserved + part.cuda_context)


def test_memory_grows_with_batch_and_sequence():
    spec = spec_for(LLAMA_1B)
    totals = [estimate(RunConfig(batch_size=b, max_seq_length=s), spec).total
              for b, s in [(1, 512), (2, 512), (2, 2048), (8, 2048)]]
    assert totals == sorted(totals) and len(set(totals)) == 4
    gc_on = estimate(RunConfig(), spec, backend="transformers").activations
    gc_off = estimate(RunConfig(gradient_checkpointing=False), spec, backend="transformers").activations
    assert gc_off > 3 * gc_on


def test_prediction_matches_h100_measurements():
    """The calibration's regression test: every recorded H100 run (bench/results) within ±10%, none under."""
    sys.path.insert(0, str(ROOT / "bench"))
    from memory_accuracy import predict, with_load_index

    files = sorted((ROOT / "bench" / "results").glob("mem*_*.json"))
    records = [r for f in files if not f.stem.endswith("_report")
               for r in with_load_index(json.loads(f.read_text())["records"])]
    rows = [predict(r) for r in records if r["status"] == "ok" and r["load_index"] == 0]
    assert len(rows) >= 12
    assert {r["quant"] for r in rows} >= {"4bit", "16bit", "fp8"} and {r["arch"] for r in rows} == {"1b", "8b"}
    for r in rows:
        assert 0 <= r["error_pct"] <= 10, r


def test_largest_batch_is_safe_against_the_h100_probes():
    """bench/largest_batch.py trained growing batches under 8/16/24 GB caps until one ran out of memory.
    Every batch that trained is predicted within +0…+10%, and the predicted largest batch is one that trains."""
    from nbkit.hardware import TIERS

    rows = [r for f in sorted((ROOT / "bench" / "results").glob("largest_batch_*.json"))
            for r in json.loads(f.read_text())["rows"]]
    assert {r["tier"] for r in rows} >= {"8GB", "16GB", "24GB"}
    for r in rows:
        spec = spec_for({"1b": "unsloth/Llama-3.2-1B-Instruct", "8b": LLAMA_8B}[r["arch"]])
        cfg = RunConfig(quantization=r["quant"], max_seq_length=r["seq"], batch_size=r["batch"])
        if r["trained"]:
            error = 100 * (estimate(cfg, spec).reserved - r["peak_gib"]) / r["peak_gib"]
            assert 0 <= error <= 10, (r, error)
        gpu = GpuInfo(True, "H100 capped", (9, 0), 79.2, 79.0, True, True, 1, TIERS[r["tier"]])
        predicted = largest_batch(cfg, spec, gpu)
        trained = {x["batch"] for x in rows if x["tier"] == r["tier"] and x["trained"]}
        failed = {x["batch"] for x in rows if x["tier"] == r["tier"] and not x["trained"]}
        # memory grows with the batch, so anything up to a batch that trained trains too
        assert 1 <= predicted <= max(trained) and all(predicted < b for b in failed), (r["tier"], predicted)


def test_largest_batch_and_fit(fake_gpu):
    spec = spec_for(LLAMA_8B)
    t4 = fake_gpu(15.0)
    cfg = RunConfig(quantization="4bit", max_seq_length=2048)
    best = largest_batch(cfg, spec, t4)
    assert best >= 1
    assert fits(estimate(cfg, spec, batch_size=best), t4)
    assert not fits(estimate(cfg, spec, batch_size=best + 1), t4)
    assert largest_batch(cfg.replace(quantization="16bit"), spec, t4) == 0


def test_tier_too_small_says_what_to_do(fake_gpu):
    with pytest.raises(HardwareError) as err:
        check_fits(RunConfig(quantization="16bit", max_seq_length=2048), spec_for(LLAMA_8B), fake_gpu(15.0))
    text = str(err.value)
    assert "needs about" in text and "15.0 GiB" in text and "quantization='4bit'" in text
    with pytest.raises(HardwareError, match="pick a smaller model"):
        check_fits(RunConfig(), spec_for("unsloth/Qwen2.5-14B-Instruct"), fake_gpu(6.0, name="GTX 1660"))


@pytest.mark.parametrize("total, arch, expect_quant", [
    (15.0, LLAMA_8B, "4bit"), (7.6, LLAMA_1B, "4bit"), (23.6, LLAMA_8B, "16bit"), (79.2, LLAMA_1B, "16bit")])
def test_recommendations_fit_and_explain(fake_gpu, total, arch, expect_quant):
    gpu = fake_gpu(total, (9, 0) if total > 70 else (8, 6))
    rec = recommend(spec_for(arch), gpu)
    assert rec.fits and rec.config.quantization == expect_quant
    assert rec.breakdown.total <= SAFETY_MARGIN * total
    assert rec.config.effective_batch >= 8 - rec.config.batch_size + 1
    assert "effective batch" in rec.reason and len(rec.reason) < 400


def test_fp8_only_where_it_was_measured_faster(fake_gpu):
    """H100 measurements: FP8 beat bf16 on Llama 8B (1.17x) but not on Llama 1B (0.93x)."""
    h100, a100 = fake_gpu(79.2, (9, 0), "H100"), fake_gpu(79.2, (8, 0), "A100")
    assert recommend(spec_for(LLAMA_8B), h100).config.quantization == "fp8"
    assert "measured faster" in recommend(spec_for(LLAMA_8B), h100).reason
    assert recommend(spec_for(LLAMA_1B), h100).config.quantization == "16bit"
    assert recommend(spec_for(LLAMA_8B), a100).config.quantization == "16bit"  # no FP8 tensor cores


def test_recommend_respects_a_requested_quantization(fake_gpu):
    rec = recommend(spec_for(LLAMA_8B), fake_gpu(23.6, (8, 6)), quantizations=["4bit"])
    assert rec.config.quantization == "4bit" and rec.config.batch_size > 2


def test_spec_from_local_folder_and_unknown_id(tiny_dir):
    from nbkit import ModelNotFoundError

    spec = spec_for(str(tiny_dir))
    assert spec.hidden_size == 64 and spec.vocab_size == 1024
    with pytest.raises(ModelNotFoundError) as err:
        spec_for("unsloth/Llama-3.2-1B-Instruc")
    assert "Did you mean unsloth/Llama-3.2-1B-Instruct" in str(err.value)
