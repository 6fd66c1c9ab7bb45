"""Which CUDA allocator the run will have, and what the plan must allow for it.

nbkit asks for expandable segments (nbkit.loading.backend.configure_allocator): with rows of mixed length torch's
default allocator keeps ever more memory reserved. The setting is read when CUDA first allocates, so when the user's
code (or `import unsloth` before nbkit) touched CUDA first, nbkit sets it through torch's runtime switch
(torch.cuda.memory._set_allocator_settings, which governs the segments allocated from then on: the model, the
activations); when even that is refused, the run has the default allocator, and the plan reserves for it.
"""
from __future__ import annotations

# The default allocator's reservation as a multiple of what the plan allocates, on mixed-length rows: measured on an
# H100 (7.6B 4-bit, batch 8 x 2048: 19.8 GiB reserved for 10.35 allocated, 1.91x; nbkit.loading.backend), rounded
# up. bench/moe.py's "touched" run measures it again on the device (docs/memory-model.md).
DEFAULT_ALLOCATOR_RESERVE = 2.0

EXPANDABLE, LATE, DEFAULT, USER = "expandable", "expandable (set after CUDA started)", "default", "user's setting"
_state: str | None = None  # None: not decided yet (nbkit will set expandable segments before CUDA starts)


def decide(user_setting: str | None, cuda_initialised: bool, late_switch_worked: bool | None) -> str:
    """The allocator a run gets: the user's setting wins; before CUDA starts nbkit sets expandable segments; after,
    the runtime switch if torch took it, else the default allocator."""
    if user_setting is not None:
        return EXPANDABLE if "expandable_segments:true" in user_setting.lower().replace(" ", "") else USER
    if not cuda_initialised:
        return EXPANDABLE
    return LATE if late_switch_worked else DEFAULT


def record(state: str) -> None:
    global _state
    _state = state


def current() -> str | None:
    return _state


def reserve_multiplier(state: str | None = None) -> float:
    """How much more than the calibrated reservation to plan: 1 with expandable segments (what the constants were
    fitted with), DEFAULT_ALLOCATOR_RESERVE over the allocation with the default allocator."""
    state = current() if state is None else state
    return DEFAULT_ALLOCATOR_RESERVE if state in (DEFAULT, USER) else 1.0


def note(state: str | None = None) -> str:
    """One line for the plan when it is not planned with expandable segments ('' otherwise)."""
    state = current() if state is None else state
    if state == DEFAULT:
        return (f"CUDA was in use before nbkit could set expandable segments and torch refused to switch them on: "
                f"planned with the default allocator's measured reservation ({DEFAULT_ALLOCATOR_RESERVE:.1f}x what "
                "is allocated). Restart and import nbkit first to get it back.")
    if state == USER:
        return (f"PYTORCH_CUDA_ALLOC_CONF is yours without expandable segments: planned with the default "
                f"allocator's measured reservation ({DEFAULT_ALLOCATOR_RESERVE:.1f}x what is allocated).")
    return ""
