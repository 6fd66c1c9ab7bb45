"""Undo what the trainer wrapped around the model, so that after training it is the model as it was loaded.

TRL 1.15's SFTTrainer always replaces the base model's `forward` with its fused-LM-head forward
(trl.trainer.utils.add_fused_lm_head, called from SFTTrainer.__init__ for every setting): an attribute on the
instance, closing over the forward it found. The trainer never takes it back. Generation then runs through it and
not through the class's forward, which on Unsloth's MoE models is not the forward Unsloth prepares for inference:
on the device every Qwen3-MoE "after" sample failed inside it (RuntimeError: The size of tensor a (20) must match the
size of tensor b (1340), trl/trainer/utils.py:1606), raw Unsloth's too. Training ends, nbkit takes it back.
"""
from __future__ import annotations

# functions TRL installs as an instance's forward (trl/trainer/utils.py)
TRL_FORWARDS = {"_fused_forward"}


def wrapped_forwards(model) -> list:
    """The modules of `model` (the PEFT wrapper, its base model, ...) whose forward a trainer replaced."""
    seen, found = set(), []
    candidates = [model]
    for attr in ("base_model", "model"):
        inner = getattr(candidates[-1], attr, None)
        if inner is not None:
            candidates.append(inner)
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        candidates.append(get_base())
    for module in candidates:
        if id(module) in seen:
            continue
        seen.add(id(module))
        if _is_trl(vars(module).get("forward")):
            found.append(module)
    return found


def undo(model) -> int:
    """Give every module the trainer wrapped its forward back: the one the wrapper closed over when that was an
    attribute of its own, else the class's. Returns how many were undone (0: nothing was wrapped)."""
    undone = 0
    for module in wrapped_forwards(model):
        while _is_trl(vars(module).get("forward")):  # a trainer built twice (OOM recovery) wrapped its wrapper
            original = _closed_over(vars(module)["forward"])
            del module.forward
            if original is not None and getattr(original, "__self__", None) is module \
                    and getattr(original, "__func__", None) is not getattr(type(module), "forward", None):
                module.forward = original  # a forward of the instance's own (another library's), restored
            undone += 1
    return undone


def _is_trl(forward) -> bool:
    """TRL's wrapper copies the class forward's name (functools.wraps): its code object keeps its own."""
    code = getattr(getattr(forward, "__func__", forward), "__code__", None)
    return forward is not None and code is not None and code.co_name in TRL_FORWARDS


def _closed_over(wrapper):
    func = getattr(wrapper, "__func__", wrapper)
    names = func.__code__.co_freevars
    for name, cell in zip(names, func.__closure__ or ()):
        if name == "original_forward":
            return cell.cell_contents
    return None
