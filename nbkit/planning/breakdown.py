"""Breakdown: a predicted peak of GPU memory, by what holds it (nbkit.planning.memory.estimate makes them)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Breakdown:
    """Predicted peak GPU memory in GiB, by what holds it."""
    weights: float
    lora: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    overhead: float
    cuda_context: float
    load: float = 0.0  # reserved while the model loads (before training); see load_peak()
    load_note: str = ""  # what loading holds, when it is more than the weights
    gathered: float = 0.0  # sharded runs: weights gathered whole while they compute (nbkit.planning.sharding)
    fragmentation: float = 0.0  # reserved beyond what is allocated where scores are materialised (SCORE_FRAGMENTATION)
    cache: float = 0.0  # reserved beyond what is allocated: the allocator's cache (Calibration.reserve_factor)

    @property
    def trainable(self) -> float:
        return self.lora + self.gradients + self.optimizer

    @property
    def reserved(self) -> float:
        """What torch's allocator reserves at the peak, without the CUDA context: what a cap must allow."""
        return self.total - self.cuda_context

    @property
    def allocated(self) -> float:
        """What tensors hold at the peak (torch.cuda.max_memory_allocated): the part the constants are fitted to.
        The reservation is planned above it: the allocator's cache (`cache`, Calibration.reserve_factor) and, where
        attention scores are materialised, their fragmentation (`fragmentation`)."""
        return self.reserved - self.fragmentation - self.cache

    @property
    def total(self) -> float:
        """What the card must hold: the reservation plus the CUDA context."""
        return (self.weights + self.gathered + self.lora + self.gradients + self.optimizer + self.activations
                + self.logits + self.overhead + self.fragmentation + self.cache + self.cuda_context)

    @property
    def limiting_phase(self) -> str:
        """'loading' when loading needs more than training (FP8 converted from a bf16 checkpoint), else
        'training'."""
        return "loading" if self.load > self.reserved else "training"

    @property
    def peak_reserved(self) -> float:
        """The larger of the two phases' reservations: what a cap on torch's memory must allow."""
        return max(self.reserved, self.load)

    @property
    def peak_total(self) -> float:
        """The larger phase plus the CUDA context: what the card must hold at some point of the run."""
        return self.peak_reserved + self.cuda_context

    def groups(self) -> dict[str, float]:
        """The parts a gauge draws: weights, LoRA+optimizer, activations, logits, overhead."""
        return {"weights": self.weights + self.gathered, "LoRA + optimizer": self.trainable, "activations": self.activations,
                "logits": self.logits,
                "overhead": self.overhead + self.fragmentation + self.cache + self.cuda_context}

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "reserved": self.reserved, "peak_total": self.peak_total,
                "limiting_phase": self.limiting_phase}

    def table(self) -> str:
        rows = [f"{k:<18}{v:8.2f} GiB" for k, v in self.groups().items()]
        rows += [f"{'training peak':<18}{self.total:8.2f} GiB",
                 f"{'loading peak':<18}{self.load + self.cuda_context:8.2f} GiB"]
        note = f" ({self.load_note})" if self.limiting_phase == "loading" else ""
        return "\n".join([*rows, f"{'total':<18}{self.peak_total:8.2f} GiB  limit: {self.limiting_phase}{note}"])
