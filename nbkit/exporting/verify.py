"""Prove that training changed the LoRA adapters (compare tensors, not `allclose` on outputs)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from ..training.adapters import snapshot  # noqa: F401  (verify.snapshot: the "before" that compare() reads)


def digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].numpy().tobytes())
    return h.hexdigest()


@dataclass
class VerifyReport:
    tensors: int
    changed: int
    max_abs_diff: float
    hash_before: str
    hash_after: str
    unchanged_names: list[str] = field(default_factory=list)

    nonfinite: int = 0  # tensors holding NaN or infinity after training

    @property
    def fraction_changed(self) -> float:
        return self.changed / self.tensors if self.tensors else 0.0

    @property
    def ok(self) -> bool:
        """Every trainable LoRA tensor changed, and every one is finite: one changed tensor proves little, and a
        NaN differs from anything."""
        return self.tensors > 0 and self.changed == self.tensors and self.nonfinite == 0

    def summary(self) -> str:
        if self.ok:
            verdict = "adapters changed"
        elif self.nonfinite:
            verdict = f"ADAPTERS ARE NOT FINITE ({self.nonfinite} tensors hold NaN/inf)"
        else:
            verdict = "ADAPTERS DID NOT ALL CHANGE" if self.changed else "ADAPTERS DID NOT CHANGE"
        return (f"{verdict}: {self.changed}/{self.tensors} LoRA tensors differ ({self.fraction_changed:.0%}), "
                f"max |Δ| = {self.max_abs_diff:.3g} (sha256 {self.hash_before[:12]} → {self.hash_after[:12]})")


def compare(before: dict, after: dict) -> VerifyReport:
    changed, worst, unchanged, nonfinite = 0, 0.0, [], 0
    for name, old in before.items():
        new = after.get(name)
        if new is None:  # gone after training: nothing shows it was trained
            unchanged.append(name)
            continue
        if not new.isfinite().all():
            nonfinite += 1
            continue  # not "changed": a NaN differs from everything
        diff = (new - old).abs().max().item()
        worst = max(worst, diff)
        if diff > 0:
            changed += 1
        else:
            unchanged.append(name)
    return VerifyReport(len(before), changed, worst, digest(before), digest(after), unchanged, nonfinite)


def adapters_changed(model, before: dict) -> VerifyReport:
    return compare(before, snapshot(model))
