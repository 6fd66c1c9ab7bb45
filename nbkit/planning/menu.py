"""Which curated model fits which GPU: each model's plan on this GPU, or on each tier's card where there is none
(a CPU session choosing a model for a workshop's Colab), as the form's model menu shows it.

Every cell is recommend()'s answer for that model on that card: the settings it would pick and the peak it plans
for them, so a mixture-of-experts model is planned with all its experts held (a 20.9B gpt-oss is not a 4B model
because only 4.2B parameters are active), and a model that fits no card of a tier says so rather than showing a
number that would run out of memory.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..specs import curated_ids, spec_for
from .cards import TIER_CARDS, planned_gpu
from .hardware import GpuInfo
from .recommend import recommend


@dataclass(frozen=True)
class Plan:
    """recommend()'s answer for one model on one card."""
    card: str
    fits: bool
    quantization: str
    reserved_gib: float

    def text(self) -> str:
        return f"{self.reserved_gib:.1f} GiB, {self.quantization}" if self.fits else "does not fit"


@dataclass(frozen=True)
class MenuRow:
    model: str
    describe: str  # "20.9B-parameter mixture of experts (4.2B active: 4 of 32 experts a token)"
    plans: tuple[Plan, ...]


def cards_for(gpu: GpuInfo) -> list[tuple[str, GpuInfo]]:
    """(column title, GpuInfo): this GPU, or without one each tier's card (8 GB, 16 GB, 24 GB, H100)."""
    if gpu.available:
        return [(gpu.name, gpu)]
    return [(f"{tier} ({name})", planned_gpu(name)) for tier, name in TIER_CARDS.items()]


def model_menu(gpu: GpuInfo, models: list[str] | None = None) -> list[MenuRow]:
    """One row per model (the curated list unless `models`), one plan per card of cards_for(gpu)."""
    cards = cards_for(gpu)
    rows = []
    for model in models or curated_ids():
        spec = spec_for(model)
        plans = []
        for title, card in cards:
            rec = recommend(spec, card)
            plans.append(Plan(title, rec.fits, rec.config.quantization, rec.breakdown.reserved))
        rows.append(MenuRow(model, spec.describe(), tuple(plans)))
    return rows
