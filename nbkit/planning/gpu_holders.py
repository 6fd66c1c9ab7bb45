"""What holds this GPU's memory, in words: the models nbkit put on it in this process, and what else.

The registry sits on the planning floor because the memory check (check_gpu's `held_by`) names what it finds
before anything loads; the loader (nbkit.loading.gpu_session) fills it and releases what it holds.
"""
from __future__ import annotations

import weakref

_loaded: list[weakref.ref] = []  # LoadedModel objects this process put on a GPU, oldest first


def register(loaded) -> None:
    """Remember a model loaded onto the GPU, so that the next load can release it."""
    _loaded[:] = [ref for ref in _loaded if ref() is not None]
    _loaded.append(weakref.ref(loaded))


def held_models() -> list:
    """The models nbkit loaded onto the GPU in this kernel that still hold memory, oldest first."""
    return [m for ref in _loaded if (m := ref()) is not None and not m.released]


def holders(held_gib: float, own_reserved_gib: float) -> list[str]:
    """What holds the memory a new run cannot use, in words, for the memory check's message."""
    if held_gib < 0.05:
        return []
    models = held_models()
    named = (f" (models nbkit loaded here: {', '.join(m.config.model for m in models)}; load without "
             "keep_previous=True releases them)" if models else
             " (tensors of this kernel that nbkit did not load: del them, or restart the kernel)")
    out = []
    if own_reserved_gib >= 0.05:
        out.append(f"{own_reserved_gib:.2f} GiB by this kernel{named}")
    if held_gib - own_reserved_gib >= 0.05:
        out.append(f"{held_gib - own_reserved_gib:.2f} GiB by other processes (nvidia-smi lists them)")
    return out
