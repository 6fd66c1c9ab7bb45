"""What this kernel holds on the GPU: the models nbkit loaded here, one at a time unless asked.

A notebook cell that loads a model is run again and again. Without care each run adds a model beside the last
(`loaded` is rebound, but the old model is still reachable from the widgets, the last traceback or `_`), and the
next training step runs out of memory on a card the plan said was big enough. So loading again releases the model
nbkit loaded before (its tensors are emptied in place, so every reference to it lets go of the memory), and says
so; what is still held afterwards is named in the plan's memory check (nbkit.planning.hardware.GpuInfo.held_gib).
"""
from __future__ import annotations

import gc

from ..errors import HardwareError
# the registry of what this process holds: the memory check, on the floor below, names what it finds there
from ..planning.gpu_holders import held_models, holders, register  # noqa: F401

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
