"""nbkit.planning.menu: each curated model planned on this GPU, or on every tier's card without one."""
from dataclasses import replace

from nbkit.planning.cards import TIER_CARDS, planned_gpu
from nbkit.planning.hardware import GpuInfo
from nbkit.planning.menu import cards_for, model_menu
from nbkit.specs import curated_ids

CPU = GpuInfo(available=False)


def test_without_a_gpu_every_curated_model_is_planned_on_each_tiers_card():
    rows = model_menu(CPU)
    assert [r.model for r in rows] == curated_ids()
    titles = [title for title, _ in cards_for(CPU)]
    assert len(titles) == len(TIER_CARDS) and all(r.plans and [p.card for p in r.plans] == titles for r in rows)


def test_a_model_that_fits_a_tier_fits_every_bigger_one():
    """The tiers go 8 GB, 16 GB, 24 GB, 80 GB: a plan that fits a smaller card fits the bigger ones."""
    for row in model_menu(CPU):
        fits = [p.fits for p in row.plans]
        assert fits == sorted(fits), (row.model, fits)


def test_a_mixture_of_experts_model_is_planned_with_all_its_experts():
    """gpt-oss-20b holds 20.9B parameters though 4.2B are active a token: no 16 GB card fits it, a 24 GB one does;
    a model with the same active size (Qwen3-4B) fits the 8 GB card."""
    rows = {r.model: r for r in model_menu(CPU, ["unsloth/gpt-oss-20b", "unsloth/Qwen3-4B"])}
    oss = rows["unsloth/gpt-oss-20b"]
    assert "20.9B" in oss.describe and "4.2B active" in oss.describe
    assert [p.fits for p in oss.plans] == [False, False, True, True]
    assert rows["unsloth/Qwen3-4B"].plans[0].fits
    assert oss.plans[2].reserved_gib > 16 and oss.plans[0].text() == "does not fit"


def test_with_a_gpu_one_column_for_it():
    gpu = replace(planned_gpu("24GB"), emulated=False)
    rows = model_menu(gpu, ["unsloth/Llama-3.2-1B-Instruct"])
    assert [p.card for p in rows[0].plans] == [gpu.name] and rows[0].plans[0].fits
