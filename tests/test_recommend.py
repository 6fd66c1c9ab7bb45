"""Choosing how several GPUs share a run: DDP when the model fits one, FSDP when it fits only sharded, and why."""
import pytest

from nbkit import RunConfig
from nbkit.planning.cards import planned_gpu
from nbkit.errors import ConfigError, HardwareError
from nbkit.planning.memory import estimate, fits, usage_vs_capacity
from nbkit.planning.recommend import SHARDED_BACKEND, check_fits, choose_parallelism, fill_in, recommend
from nbkit.specs import spec_for

L8B = spec_for("unsloth/Meta-Llama-3.1-8B-Instruct")
Q32B = spec_for("unsloth/Qwen2.5-32B-Instruct-bnb-4bit")
L70B = spec_for("unsloth/Llama-3.3-70B-Instruct-bnb-4bit")


def test_a_model_that_fits_one_gpu_trains_data_parallel():
    rec = recommend(L8B, planned_gpu("RTX 4090"), processes=2)
    assert rec.fits and rec.config.parallelism == "ddp"
    assert "It fits one GPU, so the 2 GPUs train data-parallel (DDP)" in rec.reason
    # what one GPU would be told, plus the mode: memory is per GPU either way
    one = recommend(L8B, planned_gpu("RTX 4090"))
    assert one.config.parallelism == "auto" and one.config.batch_size == rec.config.batch_size


def test_a_model_too_big_for_one_gpu_is_sharded_with_the_numbers():
    gpu = planned_gpu("A100 40GB")
    rec = recommend(L70B, gpu, processes=2)
    assert rec.fits and rec.config.parallelism == "fsdp" and rec.config.quantization == "4bit"
    assert rec.breakdown == estimate(rec.config, L70B, SHARDED_BACKEND, processes=2)
    assert fits(rec.breakdown, gpu)
    # one GPU cannot take even batch 1, the reason says so, with both figures
    whole = estimate(rec.config.replace(parallelism="ddp", batch_size=1), L70B, SHARDED_BACKEND)
    assert not fits(whole, gpu, margin=1.0)
    one, capacity = usage_vs_capacity(gpu, whole)
    assert f"does not fit one GPU (about {one:.1f} GiB in 4bit with batch 1; each GPU has {capacity:.1f}" \
           in rec.reason
    each = usage_vs_capacity(gpu, rec.breakdown)[0]
    assert f"about {each:.1f} GiB in all" in rec.reason and "1/2 of the weights" in rec.reason
    # four GPUs: each holds less, so a larger batch fits
    four = recommend(L70B, gpu, processes=4)
    assert four.breakdown.weights < rec.breakdown.weights and four.config.batch_size >= rec.config.batch_size


def test_forced_modes_are_kept():
    gpu = planned_gpu("A100 40GB")
    ddp = recommend(L70B, gpu, base=RunConfig(parallelism="ddp"), processes=2)
    assert not ddp.fits  # the user asked for whole copies: 70B does not fit one 40 GB card
    fsdp = recommend(L8B, planned_gpu("RTX 4090"), base=RunConfig(parallelism="fsdp"), processes=2)
    assert fsdp.fits and fsdp.config.parallelism == "fsdp"


def test_cards_without_bf16_are_not_sharded():
    rec = recommend(Q32B, planned_gpu("T4"), processes=2)
    assert not rec.fits and "sharding needs a GPU with bf16" in rec.reason
    assert rec.reason.endswith("Choose a smaller model that fits one GPU, or GPUs with bf16.")
    assert recommend(Q32B, planned_gpu("L4"), processes=2).config.parallelism == "fsdp"


def test_choose_parallelism_under_a_launch():
    cfg = RunConfig(model="m", quantization="4bit", max_seq_length=2048, batch_size=1)
    ddp, why = choose_parallelism(cfg, L8B, planned_gpu("RTX 4090"), 2)
    assert ddp.parallelism == "ddp" and "fits one GPU" in why
    sharded, why = choose_parallelism(cfg, L70B, planned_gpu("A100 40GB"), 2)
    assert sharded.parallelism == "fsdp" and "sharded (FSDP) across 2 GPUs" in why
    # one process, or a mode the config names: nothing to decide
    assert choose_parallelism(cfg, L70B, planned_gpu("A100 40GB"), 1) == (cfg, "")
    forced = cfg.replace(parallelism="ddp")
    assert choose_parallelism(forced, L70B, planned_gpu("A100 40GB"), 2) == (forced, "")


def test_check_fits_counts_the_processes():
    gpu = planned_gpu("A100 40GB")
    cfg = RunConfig(model="m", quantization="4bit", max_seq_length=2048, batch_size=1, parallelism="fsdp")
    assert check_fits(cfg, L70B, gpu, SHARDED_BACKEND, processes=2).peak_reserved < gpu.usable_gib
    with pytest.raises(HardwareError, match="each of 2 GPUs has"):
        check_fits(cfg.replace(batch_size=64), L70B, gpu, SHARDED_BACKEND, processes=2)


def test_parallelism_is_validated():
    with pytest.raises(ConfigError, match="Unknown parallelism 'zero3'"):
        RunConfig(parallelism="zero3")
    with pytest.raises(ConfigError, match="FP8 LoRA runs through Unsloth on one GPU"):
        RunConfig(parallelism="fsdp", quantization="fp8")


def test_from_20_gib_16_bit_is_tried_first_and_below_it_4_bit(fake_gpu):
    """The line between "16-bit first" (faster, no dequantization) and "4-bit first" (room for a batch) is 20 GiB
    usable: a 1B model fits in 16-bit on both sides, but is only given 16-bit from 20 GiB up."""
    l1b = spec_for("unsloth/Llama-3.2-1B-Instruct")
    assert recommend(l1b, fake_gpu(20.0, (8, 6))).config.quantization == "16bit"
    assert recommend(l1b, fake_gpu(19.9, (8, 6))).config.quantization == "4bit"
    assert recommend(l1b, fake_gpu(20.0, (8, 6)), quantizations=["4bit"]).config.quantization == "4bit"


def test_16_bit_is_picked_only_with_room_for_a_batch_of_two(fake_gpu):
    """On cards from 20 GiB the first try is 16-bit at 2048 tokens, rank 16: taken when at least 2 rows fit, passed
    over for a smaller setting when only 1 does. The scan crosses that boundary (both cases occur)."""
    from nbkit.planning.memory import largest_batch

    first_try = RunConfig(model=L8B.name, quantization="16bit", lora_r=16, lora_alpha=16, max_seq_length=2048,
                          gradient_checkpointing=True)
    seen = set()
    for tenths in range(200, 300, 2):
        gpu = fake_gpu(tenths / 10, (8, 6))
        rows = largest_batch(first_try, L8B, gpu)
        rec = recommend(L8B, gpu).config
        took_first = (rec.quantization, rec.lora_r, rec.max_seq_length) == ("16bit", 16, 2048)
        assert took_first == (rows >= 2), (tenths, rows, rec)
        seen.add(min(rows, 2))
    assert {1, 2} <= seen


def test_a_card_without_fp8_never_mentions_it(fake_gpu):
    for total, capability in ((15.0, (7, 5)), (23.6, (8, 6)), (79.2, (8, 0))):
        rec = recommend(L8B, fake_gpu(total, capability))
        assert rec.fits and "FP8" not in rec.reason


# --- what the user set is kept -------------------------------------------------------------------------
@pytest.mark.parametrize("seq", [512, 4096])
def test_a_sequence_length_the_user_set_is_kept(seq):
    base = RunConfig(model=L8B.name, quantization="4bit", max_seq_length=seq)
    free = recommend(L8B, planned_gpu("T4"), base=base)
    assert free.config.max_seq_length != seq  # left to nbkit, it picks its own length
    rec = recommend(L8B, planned_gpu("T4"), base=base, keep=["max_seq_length", "quantization"])
    assert rec.fits and rec.config.max_seq_length == seq and rec.config.quantization == "4bit"
    assert fits(estimate(rec.config, L8B), planned_gpu("T4"))


def test_a_kept_value_that_cannot_fit_is_an_error_that_says_what_would():
    base = RunConfig(model=L8B.name, quantization="fp8", max_seq_length=2048)
    with pytest.raises(HardwareError) as err:
        fill_in(base, planned_gpu("T4"), keep=["quantization", "max_seq_length"])
    message = str(err.value)
    assert "quantization='fp8'" in message and "no FP8 tensor cores (compute capability 7.5" in message
    alternative = recommend(L8B, planned_gpu("T4"), base=base)
    assert f"What would fit: {alternative.summary()}" in message
    # a batch the user set is kept when it fits, refused (not shrunk) when it does not
    ok = fill_in(base.replace(quantization="4bit", batch_size=1), planned_gpu("T4"), keep=["batch_size"])
    assert ok.config.batch_size == 1
    huge = base.replace(quantization="16bit", batch_size=64)
    with pytest.raises(HardwareError, match=r"settings you chose \(quantization='16bit', batch_size=64\)"):
        fill_in(huge, planned_gpu("T4"), keep=["quantization", "batch_size"])


def test_memory_already_in_use_shrinks_the_plan():
    from dataclasses import replace

    gpu = planned_gpu("RTX 4090")
    idle = recommend(L8B, gpu)
    busy = replace(gpu, held_gib=6.0, held_by=("6.00 GiB by this kernel (tensors of this kernel: del them)",))
    rec = recommend(L8B, busy)
    assert usage_vs_capacity(busy, rec.breakdown)[1] == pytest.approx(usage_vs_capacity(gpu, rec.breakdown)[1] - 6)
    assert (rec.config.quantization, rec.config.batch_size) != (idle.config.quantization, idle.config.batch_size)
    with pytest.raises(HardwareError, match=r"free now \(6.00 GiB by this kernel"):
        check_fits(idle.config, L8B, busy)


def test_what_differs_from_the_defaults_was_set_on_purpose():
    from nbkit.planning.recommend import set_by_user

    assert set_by_user(RunConfig(model=L8B.name)) == []
    assert set_by_user(RunConfig(model=L8B.name, max_seq_length=4096, quantization="16bit")) == \
        ["quantization", "max_seq_length"]
