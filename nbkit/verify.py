"""Prove that training changed the LoRA adapters (compare tensors, not `allclose` on outputs)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


def snapshot(model) -> dict[str, "torch.Tensor"]:  # noqa: F821
    """CPU copies of every trainable LoRA tensor."""
    return {name: p.detach().float().cpu().clone()
            for name, p in model.named_parameters() if "lora_" in name and p.requires_grad}


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

    @property
    def ok(self) -> bool:
        return self.tensors > 0 and self.changed > 0 and self.hash_before != self.hash_after

    def summary(self) -> str:
        verdict = "adapters changed" if self.ok else "ADAPTERS DID NOT CHANGE"
        return (f"{verdict}: {self.changed}/{self.tensors} LoRA tensors differ, max |Δ| = {self.max_abs_diff:.3g} "
                f"(sha256 {self.hash_before[:12]} → {self.hash_after[:12]})")


def compare(before: dict, after: dict) -> VerifyReport:
    changed, worst, unchanged = 0, 0.0, []
    for name, old in before.items():
        diff = (after[name] - old).abs().max().item() if name in after else float("inf")
        worst = max(worst, diff)
        if diff > 0:
            changed += 1
        else:
            unchanged.append(name)
    return VerifyReport(len(before), changed, worst, digest(before), digest(after), unchanged)


def adapters_changed(model, before: dict) -> VerifyReport:
    return compare(before, snapshot(model))
