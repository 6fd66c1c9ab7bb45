"""What this kernel holds on the GPU: the models nbkit loaded here, one at a time unless asked.

A notebook cell that loads a model is run again and again. Without care each run adds a model beside the last
(`loaded` is rebound, but the old model is still reachable from the widgets, the last traceback or `_`), and the
next training step runs out of memory on a card the plan said was big enough. So loading again releases the model
nbkit loaded before (its tensors are emptied in place, so every reference to it lets go of the memory), and says
so; what is still held afterwards is named in the plan's memory check (nbkit.hardware.GpuInfo.held_gib).
"""
from __future__ import annotations

import gc
import weakref

from ..errors import HardwareError

_loaded: list[weakref.ref] = []  # LoadedModel objects this process put on a GPU, oldest first

RELEASED = ("This model was released when a newer one was loaded in this kernel (nbkit keeps one model on the "
            "GPU, so that the new one fits): use the newer `loaded`, or load with keep_previous=True to keep both.")


class ReleasedModel:
    """Stands in for a released model: any use says what happened instead of failing on an empty tensor."""

    def __init__(self, name: str):
        self.name = name

    def __getattr__(self, attr):
        raise HardwareError(f"{self.name}: {RELEASED}")

    def __call__(self, *args, **kwargs):
        raise HardwareError(f"{self.name}: {RELEASED}")


def register(loaded) -> None:
    """Remember a model loaded onto the GPU, so that the next load can release it."""
    _loaded[:] = [ref for ref in _loaded if ref() is not None]
    _loaded.append(weakref.ref(loaded))


def held_models() -> list:
    """The models nbkit loaded onto the GPU in this kernel that still hold memory, oldest first."""
    return [m for ref in _loaded if (m := ref()) is not None and not m.released]


def release_previous(keep_previous: bool = False) -> str | None:
    """Before a new load: release every model nbkit loaded earlier in this kernel; returns the line to say
    (None when there was nothing to release, or `keep_previous`)."""
    earlier = held_models()
    if keep_previous or not earlier:
        return None
    import torch

    before = torch.cuda.memory_reserved()
    for loaded in earlier:
        release(loaded)
    freed = (before - torch.cuda.memory_reserved()) / 1024**3
    names = ", ".join(sorted({m.config.model for m in earlier}))
    return (f"released the model loaded earlier in this kernel ({names}): {freed:.2f} GiB given back, so the new "
            "one has the card (load(..., keep_previous=True) keeps both)")


def release(loaded) -> None:
    """Empty every GPU tensor of `loaded`'s model in place and give the memory back to the card. Any reference
    to the model (a widget, a traceback, `_`) then holds no GPU memory; `loaded.model` says it was released."""
    import torch

    model = loaded.model
    if loaded.released or model is None:
        return
    empty = torch.empty(0)
    for module in model.modules():
        for params in (module._parameters, module._buffers):
            for name, tensor in params.items():
                if tensor is not None and tensor.is_cuda:
                    if isinstance(tensor, torch.nn.Parameter):
                        tensor.grad = None
                        tensor.data = empty.to(tensor.dtype)
                        if hasattr(tensor, "quant_state"):  # bitsandbytes' 4-bit scales live on the GPU too
                            tensor.quant_state = None
                    else:
                        params[name] = empty.to(tensor.dtype)
        for name, value in list(vars(module).items()):  # caches kept as plain attributes (rotary tables)
            if isinstance(value, torch.Tensor) and value.is_cuda:
                setattr(module, name, empty.to(value.dtype))
    loaded.model = ReleasedModel(f"{loaded.config.model} (loaded earlier)")
    loaded.released = True
    gc.collect()
    torch.cuda.empty_cache()


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
