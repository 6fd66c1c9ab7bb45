"""Real GPUs as nbkit plans for them, and faithful rehearsal of one on a bigger card (`emulate`).

A card's label is not what training gets: the driver reports a little less than the label, and the CUDA context
(plus, on a desktop, the display) takes its share before torch allocates anything. A rehearsal must also take
away what the card cannot do: a T4 has no bf16 and no FP8, so a T4 rehearsal on an H100 trains in fp16 and
never picks FP8.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import hardware
from ..errors import ConfigError, HardwareError
from .hardware import GpuInfo

# The CUDA context measured on the H100 (bench/memory_accuracy.py records: 0.75 GiB with transformers, up to
# 0.85 with Unsloth's kernels loaded). Smaller data-centre cards have smaller contexts, so this is an upper bound.
DATACENTER_SHARE = 0.85
# A desktop card's share is an assumption, not a measurement (no desktop card was measured for nbkit): its CUDA
# context, smaller than the H100's above because the context grows with the number of SMs (a 4060 has 24, an H100
# 132), plus what the desktop's display takes. 0.8 GiB is the low end of what users report torch gets on 8 GB cards
# (7.2-7.4 GiB). docs/memory-model.md lists it with the other assumptions; a rehearsal caps torch at total - 0.8.
DESKTOP_SHARE = 0.8


@dataclass(frozen=True)
class Card:
    name: str
    total_gib: float  # as the driver reports it (nvidia-smi's total, in GiB)
    capability: tuple[int, int]
    share_gib: float  # taken before torch allocates: CUDA context (+ display on a desktop)

    @property
    def bf16(self) -> bool:
        return hardware.supports_bf16(self.capability)

    @property
    def fp8(self) -> bool:
        return hardware.supports_fp8(self.capability)

    @property
    def usable_gib(self) -> float:
        """What torch can reserve on this card."""
        return self.total_gib - self.share_gib


CARDS = {c.name: c for c in [
    Card("RTX 4060 8GB", 8.0, (8, 9), DESKTOP_SHARE),
    Card("RTX 3060 12GB", 12.0, (8, 6), DESKTOP_SHARE),
    Card("RTX 4060 Ti 16GB", 16.0, (8, 9), DESKTOP_SHARE),
    Card("RTX 4080 16GB", 16.0, (8, 9), DESKTOP_SHARE),
    Card("RTX 3090 24GB", 24.0, (8, 6), DESKTOP_SHARE),
    Card("RTX 4090 24GB", 24.0, (8, 9), DESKTOP_SHARE),
    Card("T4", 15.0, (7, 5), DATACENTER_SHARE),
    Card("L4", 22.5, (8, 9), DATACENTER_SHARE),
    Card("A10G", 22.5, (8, 6), DATACENTER_SHARE),
    Card("A100 40GB", 40.0, (8, 0), DATACENTER_SHARE),
    Card("A100 80GB", 80.0, (8, 0), DATACENTER_SHARE),
    Card("H100 80GB", 79.2, (9, 0), DATACENTER_SHARE),
]}
# each tier is rehearsed as the card most of its users have: Colab's free T4 for 16 GB
TIER_CARDS = {"8GB": "RTX 4060 8GB", "16GB": "T4", "24GB": "RTX 4090 24GB", "H100": "H100 80GB"}


def card(name: str) -> Card:
    """A card by name (case and spaces ignored) or by tier ("8GB", "16GB", "24GB", "H100")."""
    name = TIER_CARDS.get(name, name)

    def key(text: str) -> str:
        return text.lower().replace(" ", "")

    found = [c for n, c in CARDS.items() if key(n) == key(name)] or \
            [c for n, c in CARDS.items() if key(name) and key(name) in key(n)]
    if len(found) != 1:
        choices = ", ".join([*TIER_CARDS, *CARDS])
        what = "matches several cards" if found else "is not a card nbkit knows"
        raise ConfigError(f"{name!r} {what}. Choose one of: {choices}.")
    return found[0]


def planned_gpu(name: str) -> GpuInfo:
    """The GpuInfo a real `name` card presents (and a rehearsal of it reports): plan for a card you do not have,
    e.g. `recommend(spec_for(model), planned_gpu("T4"))`."""
    target = card(name)
    return GpuInfo(available=True, name=target.name, capability=target.capability, total_gib=target.total_gib,
                   free_gib=target.usable_gib, bf16=target.bf16, fp8=target.fp8, count=1,
                   capped_gib=target.usable_gib, emulated=True)


@dataclass(frozen=True)
class Rehearsal(GpuInfo):
    """The rehearsed card as check_gpu() reports it; `end()` (or leaving a `with` block) ends the rehearsal."""
    device: int = 0

    def end(self) -> GpuInfo:
        """Report the real card again and lift the memory cap."""
        if hardware.emulating() == self.name:
            hardware.end_emulation(self.device)
        return hardware.check_gpu(self.device)

    def __enter__(self) -> "Rehearsal":
        return self

    def __exit__(self, *exc) -> None:
        self.end()


def emulate(name: str, device: int = 0) -> Rehearsal:
    """Rehearse `name` (a card or a tier) on this GPU: torch may reserve only what that card leaves it, and
    check_gpu() reports that card's memory, compute capability, bf16 and FP8 from now on in this process, so
    recommend(), the gauge, loading (fp16 where the card has no bf16) and training all act as on that card.
    A rehearsal already going ends first. `with emulate("T4") as gpu: ...` ends it with the block; otherwise
    `.end()` or nbkit.planning.cards.end_rehearsal() does."""
    target = card(name)
    end_rehearsal(device)
    real = hardware.check_gpu(device)
    if not real.available:
        raise HardwareError("emulate() needs a CUDA GPU to rehearse on; on CPU nothing would be emulated.")
    if real.capability < target.capability:
        raise HardwareError(f"{real.name} (compute capability {real.capability[0]}.{real.capability[1]}) cannot "
                            f"rehearse {target.name}: it lacks features that card has. Rehearse on a newer GPU.")
    hardware.cap_memory(target.usable_gib, device)
    hardware.set_emulated(f"{target.name} (emulated on {real.name})", target.total_gib, target.capability)
    return Rehearsal(**vars(hardware.check_gpu(device)), device=device)


def end_rehearsal(device: int = 0) -> str | None:
    """End the rehearsal going on in this process, if any; returns the card it rehearsed."""
    name = hardware.emulating()
    if name is not None:
        hardware.end_emulation(device)
    return name
