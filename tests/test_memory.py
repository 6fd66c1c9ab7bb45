import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from nbkit import HardwareError, RunConfig
from nbkit.planning.hardware import GpuInfo
from nbkit.planning.memory import CALIBRATION, SAFETY_MARGIN, WEIGHT_BYTES, estimate, fits, largest_batch
from nbkit.planning.recommend import check_fits, recommend
from nbkit.specs import curated_ids, from_config_dict, spec_for

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
    from dataclasses import replace

    from nbkit.specs import DYNAMIC_4BIT_ALLOWANCE

    spec = spec_for(LLAMA_8B)
    plain = replace(spec, dynamic_4bit="")  # the bf16 checkpoint quantized on load, as transformers does it
    embed = 2 * spec.embedding_params / GIB
    w16 = estimate(RunConfig(quantization="16bit"), spec).weights
    w4 = estimate(RunConfig(quantization="4bit"), plain).weights
    assert w16 == pytest.approx(spec.linear_params * 2 / GIB + embed)
    assert w4 == pytest.approx(spec.linear_params * WEIGHT_BYTES["4bit"] / GIB + embed)
    assert WEIGHT_BYTES["4bit"] == pytest.approx(0.5159, abs=1e-4)  # NF4 + double-quantized absmax
    # Unsloth loads this id from its dynamic quant; offline nbkit cannot read which layers it keeps in 16-bit, and
    # plans the stated allowance on the 4-bit projections
    assert spec.dynamic_4bit == "allowance"
    dynamic = estimate(RunConfig(quantization="4bit"), spec).weights
    assert dynamic - w4 == pytest.approx(DYNAMIC_4BIT_ALLOWANCE * spec.linear_params * WEIGHT_BYTES["4bit"] / GIB)
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
    # every term of the 16-bit case (found missing by mutation testing: a mutant adding the 4-bit dequantization
    # buffer to 16-bit, or dropping target_modules, survived)
    cal = CALIBRATION["unsloth"]
    n_lora = spec.lora_params(8)
    assert part.weights == pytest.approx((2 * spec.linear_params + 2 * 64 * 1000) / GIB)
    assert part.lora == part.gradients == pytest.approx(4 * n_lora / GIB)
    assert part.optimizer == pytest.approx(2 * n_lora / GIB)  # adamw_8bit: 2 bytes a parameter on CUDA
    assert part.logits == 0
    assert part.overhead == pytest.approx(cal.fixed_gib + cal.slack * part.activations)  # no dequantization
    four = estimate(cfg.replace(quantization="4bit"), spec)
    assert four.overhead == pytest.approx(CALIBRATION["unsloth-kbit"].fixed_gib + 2 * 2 * 64 * 128 / GIB
                                          + CALIBRATION["unsloth-kbit"].slack * four.activations)
    only_q = estimate(cfg.replace(target_modules=("q_proj",)), spec)
    assert only_q.lora == pytest.approx(4 * spec.lora_params(8, ["q_proj"]) / GIB)
    # estimate() plans for a GPU unless told otherwise: on CPU the optimizer is plain AdamW (8 bytes)
    assert estimate(cfg, spec, on_cuda=False).optimizer == pytest.approx(8 * n_lora / GIB)
    # without checkpointing every layer keeps its activations, and nothing is checkpointed
    no_gc = estimate(cfg.replace(gradient_checkpointing=False), spec)
    assert no_gc.activations == pytest.approx(200 * per_token * 2 / GIB)


def test_memory_grows_with_batch_and_sequence():
    spec = spec_for(LLAMA_1B)
    totals = [estimate(RunConfig(batch_size=b, max_seq_length=s), spec).total
              for b, s in [(1, 512), (2, 512), (2, 2048), (8, 2048)]]
    assert totals == sorted(totals) and len(set(totals)) == 4
    gc_on = estimate(RunConfig(), spec, backend="transformers").activations
    gc_off = estimate(RunConfig(gradient_checkpointing=False), spec, backend="transformers").activations
    assert gc_off > 3 * gc_on


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


def test_fp8_only_where_it_was_measured_faster(fake_gpu, monkeypatch):
    """With nbkit's padding-free batches FP8 was measured slower than bf16 at 8B and 14B (H100): recommend() passes
    it over and quotes the measurement; had it been measured faster, it would be picked."""
    h100, a100 = fake_gpu(79.2, (9, 0), "H100"), fake_gpu(79.2, (8, 0), "A100")
    rec = recommend(spec_for(LLAMA_8B), h100)
    assert rec.config.quantization == "16bit"
    assert "FP8 was passed over: FP8 LoRA was measured 0.83× on the Llama-3.1-8B shape" in rec.reason
    monkeypatch.setattr("nbkit.planning.fp8.FP8_MEASURED", [("Llama-3.1-8B", 8.03, 2048, 4, 1.3)])
    rec = recommend(spec_for(LLAMA_8B), h100)
    assert rec.config.quantization == "fp8" and "measured 1.30× on the Llama-3.1-8B shape" in rec.reason
    assert recommend(spec_for(LLAMA_8B), a100).config.quantization == "16bit"  # no FP8 tensor cores


def test_qk_norms_keep_their_outputs():
    """Qwen3 normalises q and k per head: the normed copies are kept beside the raw ones."""
    from nbkit.planning.memory import activation_bytes_per_token_layer

    qwen3 = spec_for("unsloth/Qwen3-8B")
    plain = replace(qwen3, qk_norm=False)
    assert qwen3.qk_norm and not spec_for(LLAMA_8B).qk_norm
    assert activation_bytes_per_token_layer(qwen3) - activation_bytes_per_token_layer(plain) == \
        2 * (32 * 128 + 8 * 128)


def test_gemma2_scores_are_counted_where_they_are_materialised(monkeypatch):
    """Gemma 2 under Unsloth without flash-attn computes batch x heads x length^2 scores; nothing else does."""
    from nbkit.planning import memory

    monkeypatch.setattr(memory, "_flash_attn_installed", lambda: False)
    gemma = spec_for("unsloth/gemma-2-9b-it")
    one = memory.attention_scores_bytes(gemma, "unsloth", 1, 1024)
    assert one == 16 * 1024**2 * memory.SCORE_BYTES
    assert memory.attention_scores_bytes(gemma, "unsloth", 2, 2048) == 8 * one  # rows x length^2
    assert memory.attention_scores_bytes(gemma, "transformers", 2, 2048) == 0
    assert memory.attention_scores_bytes(spec_for(LLAMA_8B), "unsloth", 2, 2048) == 0
    cfg = RunConfig(quantization="4bit", max_seq_length=2048, batch_size=4)
    with_scores = estimate(cfg, gemma)
    monkeypatch.setattr(memory, "_flash_attn_installed", lambda: True)  # flash-attn computes them in tiles
    scores = 4 * 16 * 2048**2 * memory.SCORE_BYTES / 1024**3
    assert with_scores.activations - estimate(cfg, gemma).activations == pytest.approx(scores)
    # their changing shapes keep blocks reserved: counted in the reservation, not in the allocation
    assert with_scores.fragmentation == pytest.approx(scores * memory.SCORE_FRAGMENTATION)
    assert with_scores.reserved - with_scores.allocated == pytest.approx(with_scores.fragmentation)
    assert estimate(cfg, spec_for(LLAMA_8B)).fragmentation == 0


def test_load_peak_against_the_h100_loads():
    """bench/load_peak.py: predicted load within +0..+12% of the allocated peak of models.load, never under;
    FP8 from bf16 is limited by loading, not training."""
    from dataclasses import replace

    rows = json.loads((ROOT / "bench/results/load_peak_8b.json").read_text())["rows"]
    spec = replace(spec_for(LLAMA_8B), dynamic_4bit="")  # a random-weight checkpoint quantized to plain 4-bit
    assert {r["quant"] for r in rows} == {"4bit", "16bit", "fp8"}
    for r in rows:
        part = estimate(RunConfig(quantization=r["quant"], batch_size=1), spec)
        assert 0 <= part.load / r["measured_allocated_gib"] - 1 <= 0.12, r
    fp8 = estimate(RunConfig(quantization="fp8", batch_size=2), spec)
    assert fp8.limiting_phase == "loading" and fp8.peak_total > fp8.total
    assert "loads the whole model in bf16" in fp8.load_note
    assert estimate(RunConfig(quantization="4bit", batch_size=2), spec).limiting_phase == "training"


FP8_CARDS = [(23.5, "RTX 4090"), (22.0, "L4"), (15.6, "RTX 4080"), (15.6, "RTX 4060 Ti 16GB")]


@pytest.mark.parametrize("total, name", FP8_CARDS)
def test_recommend_never_picks_fp8_whose_load_does_not_fit(fake_gpu, total, name):
    """Issue: for 10 (card, curated model) pairs recommend() picked FP8 where the bf16 load could not fit."""
    gpu = fake_gpu(total, (8, 9), name)
    passed_over = 0
    for model in curated_ids():
        spec = spec_for(model)
        rec = recommend(spec, gpu)
        fp8 = estimate(rec.config.replace(quantization="fp8", batch_size=1), spec)
        if rec.config.quantization == "fp8":
            assert fits(rec.breakdown, gpu), model
        elif rec.fits and not fits(fp8, gpu, margin=SAFETY_MARGIN) and fp8.limiting_phase == "loading":
            assert "FP8 was passed over: converting to FP8 first loads the whole model in bf16" in rec.reason, model
            passed_over += 1
    assert passed_over >= 2  # every one of these cards has curated models whose bf16 load does not fit


def test_checkpoint_kind_from_config_or_name():
    base = json.loads((ROOT / "nbkit/specs/models.json").read_text())[LLAMA_8B]
    assert spec_for(LLAMA_8B).checkpoint == "bf16"
    assert from_config_dict(base, "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit").checkpoint == "bnb-4bit"
    bnb = {**base, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}
    assert from_config_dict(bnb, "my-folder").checkpoint == "bnb-4bit"
    fp8 = {**base, "quantization_config": {"quant_method": "fbgemm_fp8"}}
    assert from_config_dict(fp8, "my-folder").checkpoint == "fp8"
    # an FP8 checkpoint loads as FP8: no bf16 detour
    part = estimate(RunConfig(quantization="fp8", batch_size=2), from_config_dict(fp8, "x"))
    assert part.limiting_phase == "training" and part.load_note == ""


def test_recommend_respects_a_requested_quantization(fake_gpu):
    rec = recommend(spec_for(LLAMA_8B), fake_gpu(23.6, (8, 6)), quantizations=["4bit"])
    assert rec.config.quantization == "4bit" and rec.config.batch_size > 2


def test_spec_from_local_folder_and_unknown_id(tiny_dir):
    from nbkit import ModelNotFoundError

    spec = spec_for(str(tiny_dir))
    assert spec.hidden_size == 128 and spec.num_hidden_layers == 4 and spec.vocab_size == 1024  # the shipped model
    with pytest.raises(ModelNotFoundError) as err:
        spec_for("unsloth/Llama-3.2-1B-Instruc")
    assert "Did you mean unsloth/Llama-3.2-1B-Instruct" in str(err.value)


def test_fp8_conversion_checks_the_disk_first(monkeypatch, tmp_path):
    """The FP8 copy of a bf16 checkpoint goes under the temp folder: a disk too small fails before loading."""
    from nbkit.loading.models import _check_fp8_disk

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    _check_fp8_disk(spec_for(LLAMA_1B))  # about 1.5 GB: fits this machine's disk
    huge = from_config_dict({**json.loads((ROOT / "nbkit/specs/models.json").read_text())[LLAMA_8B],
                             "num_hidden_layers": 100_000}, "huge")
    with pytest.raises(HardwareError, match=f"writes an FP8 copy of about .* GB to {tmp_path}.*TMPDIR"):
        _check_fp8_disk(huge)


def test_the_cuda_context_constant_is_the_measured_one():
    """Every H100 record measured the context (GPU in use minus torch's reservation) on a GPU of its own."""
    import glob
    import math

    seen = {"unsloth": [], "transformers": []}
    for path in glob.glob(str(ROOT / "bench/results/mem*.json")):
        if path.endswith("_report.json"):
            continue
        for r in json.loads(Path(path).read_text()).get("records", []):
            if "context_gib" in r and not r.get("shared_gpu"):
                seen[r["backend"]].append(r["context_gib"])
    for backend, values in seen.items():
        assert len(values) >= 5
        assert CALIBRATION[backend].context_gib == math.ceil(max(values) * 20) / 20, backend


def test_fused_projections_are_modelled_as_they_are():
    """Phi-3 as Microsoft ships it fuses q/k/v and gate/up: the same weights, fewer LoRA parameters."""
    base = json.loads((ROOT / "nbkit/specs/models.json").read_text())["unsloth/Phi-3.5-mini-instruct"]
    llamafied = from_config_dict(base, "unsloth/Phi-3.5-mini-instruct")
    fused = from_config_dict({k: v for k, v in base.items() if k != "fused_projections"} | {"model_type": "phi3"},
                             "microsoft/Phi-3.5-mini-instruct")
    assert not llamafied.fused_projections and fused.fused_projections
    assert set(fused.projection_shapes()) == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    assert fused.linear_params == llamafied.linear_params
    h, q, kv, i, layers = 3072, 3072, 3072, 8192, 32
    # by hand: separate q, k, v, gate, up each get their own A; fused ones share one
    separate = 16 * (3 * h + q + 2 * kv + q + h + 2 * (h + i) + i + h) * layers
    shared = 16 * ((h + q + 2 * kv) + (q + h) + (h + 2 * i) + (i + h)) * layers
    assert llamafied.lora_params(16) == separate and fused.lora_params(16) == shared


def allocated_total(part) -> float:
    """What recommend()'s margin is checked against: the plan without the allocator's cache (checked on its own)."""
    return part.peak_total - part.cache


def test_largest_batch_edges(fake_gpu):
    """Mutation testing found these unguarded: a card where only batch 1 fits, and the upper bound."""
    spec = spec_for(LLAMA_8B)
    cfg = RunConfig(quantization="4bit", max_seq_length=4096)
    one, two = (allocated_total(estimate(cfg, spec, batch_size=b)) for b in (1, 2))
    gpu = fake_gpu((one + two) / 2 / SAFETY_MARGIN)  # batch 1 fits, batch 2 does not
    assert largest_batch(cfg, spec, gpu) == 1
    assert largest_batch(cfg, spec, fake_gpu(79.2, (9, 0)), upper=3) == 3
    # the backend matters: transformers needs more, so fits fewer
    assert largest_batch(cfg, spec, fake_gpu(23.6), backend="transformers") < largest_batch(cfg, spec, fake_gpu(23.6))


def test_check_fits_uses_the_backend_it_is_given(fake_gpu):
    spec, gpu = spec_for(LLAMA_8B), fake_gpu(15.0)
    cfg = RunConfig(quantization="4bit", max_seq_length=2048, batch_size=4)
    assert check_fits(cfg, spec, gpu) == estimate(cfg, spec)  # fits with Unsloth's kernels
    with pytest.raises(HardwareError, match="needs about"):
        check_fits(cfg, spec, gpu, backend="transformers")  # not without them


@pytest.mark.parametrize("backend", ["unsloth", "transformers"])
def test_recommend_keeps_its_contract_on_every_card(backend):
    """Invariants of every recommendation, over the curated models and the real cards (mutation testing showed
    the loop's values and the breakdown's backend unguarded)."""
    from nbkit.planning.cards import CARDS, planned_gpu

    for card in CARDS:
        gpu = planned_gpu(card)
        for model in curated_ids():
            spec = spec_for(model)
            rec = recommend(spec, gpu, backend=backend)
            c = rec.config
            if not rec.fits:
                continue
            assert c.max_seq_length in (2048, 1024, 512) and c.lora_r in (16, 8) and c.lora_alpha == c.lora_r
            assert c.gradient_checkpointing and c.grad_accum == max(1, 8 // c.batch_size)
            assert rec.breakdown == estimate(c, spec, backend, bf16=gpu.bf16)  # the card's float32 families (T4)
            assert c.quantization == "4bit" or c.batch_size >= 2  # 16-bit/FP8 only with room for a real batch
            two = recommend(spec, gpu, backend=backend, processes=2).config
            assert two.grad_accum == max(1, 8 // (two.batch_size * 2))


def test_recommend_says_when_nothing_fits(fake_gpu):
    spec = spec_for("unsloth/Qwen2.5-14B-Instruct")
    rec = recommend(spec, fake_gpu(4.0, (8, 6), "tiny card"))
    c = rec.config
    assert not rec.fits and (c.quantization, c.lora_r, c.lora_alpha, c.max_seq_length, c.batch_size,
                             c.grad_accum) == ("4bit", 8, 8, 512, 1, 8)
    assert rec.breakdown == estimate(c, spec)
    head = (f"unsloth/Qwen2.5-14B-Instruct needs about {rec.breakdown.peak_total:.1f} GiB even in 4-bit with batch "
            "1; this GPU has 4.0 GiB. Choose a smaller model or a GPU with more memory (the smallest card nbkit knows "
            "that holds it: the ")
    assert rec.reason.startswith(head) and rec.reason.endswith("), or shard it across several GPUs.")
    # the card it names holds these settings, and no card nbkit knows with less memory (but more than 4 GiB) does
    from nbkit.planning.cards import CARDS, planned_gpu
    from nbkit.planning.memory import fits

    named = rec.reason[len(head):].split(")")[0]
    holds = {name: fits(estimate(c, spec, bf16=card.bf16), planned_gpu(name)) for name, card in CARDS.items()}
    assert holds[named]
    assert not any(holds[name] for name, card in CARDS.items() if 4.0 < card.usable_gib < CARDS[named].usable_gib)


def test_16bit_needs_room_for_a_real_batch_unless_asked_for(fake_gpu):
    spec = spec_for(LLAMA_1B)
    cfg = RunConfig(quantization="16bit", max_seq_length=2048, lora_r=16, lora_alpha=16)
    one, two = (allocated_total(estimate(cfg, spec, batch_size=b)) for b in (1, 2))
    gpu = fake_gpu((one + two) / 2 / SAFETY_MARGIN, (8, 6))  # 16-bit fits batch 1 only
    assert gpu.usable_gib < 20
    assert recommend(spec, gpu).config.quantization == "4bit"
    asked = recommend(spec, gpu, quantizations=["16bit"]).config
    assert (asked.quantization, asked.batch_size, asked.max_seq_length) == ("16bit", 1, 2048)


def test_the_advice_of_check_fits_is_for_the_users_run(fake_gpu):
    """The fix check_fits suggests keeps the user's model settings and backend."""
    spec, gpu = spec_for(LLAMA_8B), fake_gpu(15.0)
    cfg = RunConfig(quantization="16bit", max_seq_length=2048, lora_r=8, lora_alpha=32, learning_rate=1e-4)
    for backend in ("unsloth", "transformers"):
        with pytest.raises(HardwareError) as err:
            check_fits(cfg, spec, gpu, backend=backend)
        assert f"Try: {recommend(spec, gpu, base=cfg, backend=backend).summary()}" in str(err.value)
    unnamed = from_config_dict(json.loads((ROOT / "nbkit/specs/models.json").read_text())[LLAMA_8B])
    with pytest.raises(HardwareError, match="^This model with 16bit"):
        check_fits(cfg, unnamed, fake_gpu(4.0, (8, 6)))


def test_load_peak_terms_by_hand():
    spec = spec_for(LLAMA_8B)
    largest = 4096 * 14336
    part = estimate(RunConfig(quantization="16bit", batch_size=1), spec)
    assert part.load == pytest.approx(part.weights + part.lora + 2 * largest / GIB + 16 / 1024)  # + 16 MiB buffers
    fp8 = estimate(RunConfig(quantization="fp8", batch_size=1), spec)
    whole = (2 * spec.total_params + 4 * largest) / GIB
    assert fp8.load == pytest.approx(whole) and f"in bf16 ({whole:.1f} GiB)" in fp8.load_note


def test_the_fp8_pass_over_quotes_the_load_at_batch_1():
    from nbkit.planning.cards import planned_gpu

    spec, gpu = spec_for(LLAMA_8B), planned_gpu("RTX 4080 16GB")
    rec = recommend(spec, gpu)
    load = estimate(rec.config.replace(quantization="fp8", batch_size=1, lora_r=16, lora_alpha=16,
                                       max_seq_length=2048), spec)
    assert f"{load.peak_reserved:.1f} GiB in all, more than this GPU's {gpu.usable_gib:.1f} GiB" in rec.reason


def test_peaks_the_fit_never_saw_are_not_under_predicted():
    """nbkit's own session-4 runs (padding-free batches, full-length and real-length rows) were not fitted on."""
    sys.path.insert(0, str(ROOT / "bench"))
    from fit_memory import held_out

    rows = held_out()
    assert {r["lengths"] for r in rows} == {"uniform", "mixed"} and {r["arch"] for r in rows} == {"1b", "8b"}
    assert all(r["error_pct"] >= 0 for r in rows)


def test_the_breakdown_as_the_gauge_and_cli_show_it():
    part = estimate(RunConfig(quantization="fp8", batch_size=2), spec_for(LLAMA_8B))
    groups = part.groups()
    # the allocator's cache (reserved beyond the allocation) is drawn with the overhead
    assert part.cache > 0 and groups["overhead"] == pytest.approx(part.overhead + part.cache + part.cuda_context)
    assert sum(groups.values()) == pytest.approx(part.total)
    table = part.table().splitlines()
    assert table[0].startswith("weights") and f"{part.total:8.2f} GiB" in table[-3]
    assert f"{part.load + part.cuda_context:8.2f} GiB" in table[-2]
    assert table[-1] == (f"{'total':<18}{part.peak_total:8.2f} GiB  limit: loading ({part.load_note})")
    assert part.as_dict()["limiting_phase"] == "loading" and part.as_dict()["peak_total"] == part.peak_total
    four = estimate(RunConfig(quantization="4bit", batch_size=2), spec_for(LLAMA_8B))
    assert four.table().splitlines()[-1].endswith("limit: training")


def test_check_fits_allows_the_whole_card(fake_gpu):
    """recommend() keeps a 15 % margin, but a run the user asks for may use the card up to its last GiB."""
    spec = spec_for(LLAMA_8B)
    cfg = RunConfig(quantization="4bit", max_seq_length=2048, batch_size=4)
    predicted = estimate(cfg, spec).peak_total
    gpu = fake_gpu(predicted / 0.95)  # within the card, beyond the margin
    assert not fits(estimate(cfg, spec), gpu) and check_fits(cfg, spec, gpu)


@pytest.mark.parametrize("model, parallelism", [("unsloth/gemma-2-9b-it", "auto"),
                                                ("unsloth/Llama-3.3-70B-Instruct-bnb-4bit", "fsdp")])
def test_the_gauge_draws_every_byte_of_the_plan(model, parallelism):
    """The gauge's groups add up to the total, with the gathered layer (sharded) and Gemma 2's fragmentation in."""
    from nbkit.planning.recommend import SHARDED_BACKEND

    cfg = RunConfig(model=model, quantization="4bit", max_seq_length=2048, batch_size=2, parallelism=parallelism)
    sharded = parallelism == "fsdp"
    part = estimate(cfg, spec_for(model), SHARDED_BACKEND if sharded else "unsloth", processes=2 if sharded else 1)
    assert (part.gathered > 0) == sharded and (part.fragmentation > 0) != sharded
    assert sum(part.groups().values()) == pytest.approx(part.total, rel=1e-12)


def test_a_checkpoint_that_keeps_layers_in_16bit_is_planned_with_them(tmp_path, tiny_dir):
    """A 4-bit checkpoint whose quantization config skips modules (as Unsloth's dynamic quants do): quantized on
    CPU with bitsandbytes, saved, and read back. The plan counts exactly the 16-bit bytes the loaded model holds in
    its decoder projections."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    skip = ["lm_head", "model.layers.0.mlp.down_proj", "model.layers.2.self_attn", "o_proj"]
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=skip)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir), quantization_config=quant, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "dynamic")
    spec = spec_for(str(tmp_path / "dynamic"))
    assert spec.checkpoint == "bnb-4bit"
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "dynamic"))
    kept = sum(m.weight.numel() for name, m in loaded.named_modules()
               if name.startswith("model.layers.") and type(m) is torch.nn.Linear)  # not bnb's Linear4bit
    assert kept > 0 and spec.unquantized_params == kept
    plain = estimate(RunConfig(quantization="4bit"), spec_for(str(tiny_dir)))
    dynamic = estimate(RunConfig(quantization="4bit"), spec)
    assert (dynamic.weights - plain.weights) * 1024**3 == pytest.approx(kept * (2.0 - WEIGHT_BYTES["4bit"]))


def test_a_dynamic_quant_in_the_local_cache_is_counted(tmp_path, monkeypatch):
    """Once Unsloth's dynamic quant of an id has been downloaded, its config in the Hugging Face cache says which
    layers stay 16-bit: the plan counts them instead of the allowance, and reads no network to do it."""
    import huggingface_hub

    from nbkit.specs import DYNAMIC_SUFFIX

    repo = "unsloth/Llama-3.2-1B-Instruct" + DYNAMIC_SUFFIX
    snapshot = tmp_path / ("models--" + repo.replace("/", "--")) / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    skip = ["lm_head", "model.layers.1.mlp.down_proj", "model.layers.15.self_attn.o_proj"]
    (snapshot / "config.json").write_text(json.dumps({"quantization_config": {
        "quant_method": "bitsandbytes", "load_in_4bit": True, "llm_int8_skip_modules": skip}}))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = spec_for("unsloth/Llama-3.2-1B-Instruct")
    shapes = spec.projection_shapes()
    assert spec.dynamic_4bit == "counted"
    assert spec.unquantized_params == shapes["down_proj"][0] * shapes["down_proj"][1] + \
        shapes["o_proj"][0] * shapes["o_proj"][1]
