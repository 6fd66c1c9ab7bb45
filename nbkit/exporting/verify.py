"""Prove that training changed the LoRA adapters: each adapted module's effective update ΔW = B·A (times LoRA's
scaling) must have moved, judged on the tensors themselves, not `allclose` on outputs.

Judging each tensor alone would call correct runs failed: LoRA starts B at zero, so while B is zero A receives no
gradient, and after one or two steps A is still where it started although B·A has moved. A module whose update did
not move is named with why (still zero, no gradient at all, not finite, gone).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ..training.adapters import snapshot  # noqa: F401  (verify.snapshot: the "before" that compare() reads)

# peft's names: <module>.lora_A.<adapter>.weight, <module>.lora_embedding_B.<adapter>, ...
_PAIR = re.compile(r"^(?P<module>.*)\.lora_(?P<kind>embedding_)?(?P<side>[AB])(?P<rest>\..*|)$")


def digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].numpy().tobytes())
    return h.hexdigest()


def modules(names) -> dict[str, dict[str, str]]:
    """Adapted module (with its adapter name) → {"A": tensor name, "B": tensor name}; a LoRA tensor without a
    partner (DoRA's magnitude vector) is a module of its own, under the key "self"."""
    groups: dict[str, dict[str, str]] = {}
    for name in names:
        m = _PAIR.match(name)
        if m is None:
            groups[name] = {"self": name}
        else:
            groups.setdefault(f"{m['module']}{m['rest'] or ''}", {})[m["side"]] = name
    for key, parts in list(groups.items()):
        if "self" not in parts and set(parts) != {"A", "B"}:  # half a pair: judged tensor by tensor
            del groups[key]
            groups.update({name: {"self": name} for name in parts.values()})
    return groups


@dataclass
class VerifyReport:
    tensors: int  # trainable LoRA tensors (A and B count apart)
    changed: int  # of those, how many differ: a correct short run leaves A where it started while B is zero
    max_abs_diff: float  # the largest change of any adapted module's update, ‖Δ(B·A)‖ (Frobenius)
    hash_before: str
    hash_after: str
    unchanged_names: list[str] = field(default_factory=list)  # modules whose update did not move
    nonfinite: int = 0  # tensors holding NaN or infinity after training
    modules: int = 0  # adapted modules judged
    modules_changed: int = 0
    why: dict[str, str] = field(default_factory=dict)  # module → why its update did not move

    @property
    def fraction_changed(self) -> float:
        """Of the adapted modules, the fraction whose update B·A moved."""
        return self.modules_changed / self.modules if self.modules else 0.0

    @property
    def ok(self) -> bool:
        """Every adapted module's update moved and every tensor is finite: one moved module proves little, and a
        NaN differs from anything."""
        return self.modules > 0 and self.modules_changed == self.modules and self.nonfinite == 0

    def summary(self) -> str:
        if self.ok:
            verdict = "adapters changed"
        elif self.nonfinite:
            verdict = f"ADAPTERS ARE NOT FINITE ({self.nonfinite} tensors hold NaN/inf)"
        else:
            verdict = "ADAPTERS DID NOT ALL CHANGE" if self.modules_changed else "ADAPTERS DID NOT CHANGE"
        text = (f"{verdict}: {self.modules_changed}/{self.modules} adapted modules' updates B·A moved "
                f"({self.fraction_changed:.0%}; {self.changed}/{self.tensors} LoRA tensors differ), max ‖Δ(B·A)‖ = "
                f"{self.max_abs_diff:.3g} (sha256 {self.hash_before[:12]} → {self.hash_after[:12]})")
        if self.why:
            first, reason = next(iter(self.why.items()))
            more = f" (and {len(self.why) - 1} more)" if len(self.why) > 1 else ""
            text += f". Not moved: {first}: {reason}{more}"
        return text


def compare(before: dict, after: dict) -> VerifyReport:
    import torch

    changed = sum(1 for n, old in before.items() if n in after and after[n].isfinite().all()
                  and not torch.equal(after[n], old))
    nonfinite = sum(1 for n in before if n in after and not after[n].isfinite().all())
    groups = modules(before)
    worst, why = 0.0, {}
    for module, parts in groups.items():
        moved, reason = _judge(before, after, parts)
        worst = max(worst, moved)
        if reason:
            why[module] = reason
    return VerifyReport(len(before), changed, worst, digest(before), digest(after), list(why), nonfinite,
                        len(groups), len(groups) - len(why), why)


def _judge(before: dict, after: dict, parts: dict[str, str]) -> tuple[float, str]:
    """(how far the module's update moved, why it did not: "" when it did)."""
    import torch

    names = list(parts.values())
    if any(after.get(n) is None for n in names):
        return 0.0, "gone after training, so nothing shows it was trained"
    if any(not after[n].isfinite().all() for n in names):
        return 0.0, "holds NaN or infinity"
    if "self" in parts:
        n = parts["self"]
        diff = (after[n] - before[n]).abs().max().item() if after[n].numel() else 0.0
        return diff, "" if diff > 0 else "did not move: no gradient reached it"
    a0, b0, a1, b1 = before[parts["A"]], before[parts["B"]], after[parts["A"]], after[parts["B"]]
    if torch.equal(a0, a1) and torch.equal(b0, b1):
        return 0.0, ("neither A nor B moved: no gradient reached this module (a learning rate of 0 at every step, or "
                     "a module the forward pass does not use)")
    if not b1.any() and not b0.any():
        return 0.0, "B is still all zeros, so B·A is zero whatever A learned"
    return _update_norm(a0, b0, a1, b1), ""


def _update_norm(a0, b0, a1, b1) -> float:
    """‖B1·A1 − B0·A0‖ without forming the out×in product: the difference is [B1, −B0]·[A1; A0], and
    ‖M·N‖² = Σ (MᵀM) ⊙ (N·Nᵀ), two 2r×2r matrices."""
    import torch

    m = torch.cat([b1.reshape(b1.shape[0], -1), -b0.reshape(b0.shape[0], -1)], dim=1).double()
    n = torch.cat([a1.reshape(a1.shape[0], -1), a0.reshape(a0.shape[0], -1)], dim=0).double()
    return float(((m.T @ m) * (n @ n.T)).sum().clamp(min=0).sqrt())


def adapters_changed(model, before: dict) -> VerifyReport:
    return compare(before, snapshot(model))
