"""Real cards as nbkit plans for them, and what a rehearsal of one on a bigger GPU must take away."""
import pytest

from nbkit import ConfigError, HardwareError
from nbkit.planning.cards import CARDS, TIER_CARDS, card, emulate, planned_gpu
from nbkit.planning.memory import estimate, fits
from nbkit.planning.recommend import recommend
from nbkit.specs import curated_ids, spec_for

REQUIRED = ["RTX 3060 12GB", "RTX 4060 8GB", "RTX 4060 Ti 16GB", "RTX 4080 16GB", "RTX 4090 24GB", "RTX 3090 24GB",
            "T4", "L4", "A10G", "A100 40GB", "A100 80GB", "H100 80GB"]


def test_the_table_has_the_cards_users_have():
    assert set(REQUIRED) <= set(CARDS)
    t4 = card("t4")
    assert (t4.total_gib, t4.capability, t4.bf16, t4.fp8) == (15.0, (7, 5), False, False)
    assert card("rtx 4090 24gb").fp8 and not card("RTX 3090 24GB").fp8 and card("A100 40GB").bf16
    # a desktop 8 GB card leaves torch about 7.2 GiB; every card's share is taken off its total
    assert card("RTX 4060 8GB").usable_gib == pytest.approx(7.2)
    assert all(0.5 <= c.share_gib < 1.0 and c.usable_gib < c.total_gib for c in CARDS.values())


def test_tiers_map_to_reference_cards_and_bad_names_say_what_exists():
    assert {t: card(t).name for t in TIER_CARDS} == TIER_CARDS
    with pytest.raises(ConfigError, match="not a card nbkit knows.*RTX 4060 8GB.*T4"):
        card("GTX 480")
    with pytest.raises(ConfigError, match="matches several cards"):
        card("RTX 40")


def test_a_planned_card_is_its_usable_memory_and_abilities():
    gpu = planned_gpu("T4")
    assert gpu.usable_gib == pytest.approx(15.0 - 0.85) and not gpu.bf16 and not gpu.fp8
    assert gpu.tier == "16GB" and "after the CUDA context" in gpu.summary()
    assert planned_gpu("8GB").tier == "8GB" and planned_gpu("24GB").fp8


@pytest.mark.parametrize("name", REQUIRED)
def test_recommend_plans_within_the_card_and_its_abilities(name):
    """A T4 rehearsal must never pick FP8; every pick fits what torch can reserve on that card, load included."""
    gpu = planned_gpu(name)
    for model in curated_ids():
        rec = recommend(spec_for(model), gpu)
        if not rec.fits:
            continue
        assert rec.config.quantization != "fp8" or gpu.fp8
        part = estimate(rec.config, spec_for(model))
        assert part.peak_reserved <= gpu.usable_gib, (name, model)
        assert fits(part, gpu)


def test_emulating_needs_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(HardwareError, match="needs a CUDA GPU"):
        emulate("T4")


def test_a_planned_card_reports_itself():
    gpu = planned_gpu("L4")
    assert (gpu.name, gpu.capability, gpu.total_gib, gpu.free_gib, gpu.count) == ("L4", (8, 9), 22.5, 22.5 - 0.85, 1)
    assert gpu.bf16 and gpu.fp8 and gpu.emulated and gpu.available


def test_a_session_started_without_emulation_ends_a_rehearsal(capsys):
    """session.start(emulate_tier=True) then session.start(emulate_tier=False): the second plans for the real
    card, and says the rehearsal ended."""
    from nbkit.planning import hardware
    from nbkit import session

    hardware.set_emulated("T4 (emulated on NVIDIA H200)", 15.0, (7, 5))
    s = session.start("16GB")
    assert hardware.emulating() is None and not s.gpu.emulated
    assert "the rehearsal of T4 (emulated on NVIDIA H200) ended; planning for the real card" in capsys.readouterr().out
    session.start("16GB")
    assert "rehearsal" not in capsys.readouterr().out  # said once, when there was one to end
