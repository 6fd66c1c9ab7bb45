"""check_gpu(): what accelerator this process has, which nbkit tier it falls in, and what it supports."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import HardwareError

GIB = 1024**3

# A tier is named for the card class it serves; `capacity_gib` is what nbkit plans against.
TIERS = {"8GB": 8.0, "16GB": 16.0, "24GB": 24.0, "H100": 80.0}

_cap_gib: float | None = None
_emulated: tuple[str, float, tuple[int, int]] | None = None  # (name, total GiB, capability): cards.emulate
_nvml_ready = False


@dataclass(frozen=True)
class GpuInfo:
    available: bool
    name: str = "CPU (no CUDA GPU)"
    capability: tuple[int, int] = (0, 0)
    total_gib: float = 0.0
    free_gib: float = 0.0
    bf16: bool = False
    fp8: bool = False
    count: int = 0
    capped_gib: float | None = None
    emulated: bool = False  # a rehearsal of another card (nbkit.planning.cards.emulate): its memory and abilities
    held_gib: float = 0.0  # already in use when checked (this kernel's tensors, other processes): not for a new run
    held_by: tuple[str, ...] = ()  # what holds it, in words

    @property
    def room_gib(self) -> float:
        """What a new run may use now: the card (or its cap) less what is already held."""
        return max(0.0, self.usable_gib - self.held_gib)

    @property
    def usable_gib(self) -> float:
        """Memory this process may use: the card, or the cap set by cap_memory()."""
        return min(self.total_gib, self.capped_gib) if self.capped_gib else self.total_gib

    @property
    def tier(self) -> str | None:
        if not self.available:
            return None
        return tier_for(self.total_gib if self.emulated else self.usable_gib)  # a rehearsed card's own class

    def summary(self) -> str:
        if not self.available:
            return ("No CUDA GPU found: nbkit runs on CPU through transformers + peft (Unsloth needs an NVIDIA "
                    "GPU). Fine for a smoke run on a tiny model; real fine-tuning needs a GPU.")
        cap = f" (capped to {self.capped_gib:.1f} GiB)" if self.capped_gib else ""
        if self.emulated:
            cap = f", {self.capped_gib:.2f} GiB of it for torch after the CUDA context's share"
        feats = ", ".join(x for x, ok in (("bf16", self.bf16), ("FP8", self.fp8)) if ok) or "fp16 only"
        held = f" In use already: {'; '.join(self.held_by)}." if self.held_by else ""
        return (f"{self.name}: {self.total_gib:.1f} GiB{cap}, compute capability "
                f"{self.capability[0]}.{self.capability[1]}, {feats}; nbkit tier {self.tier}.{held}")


def tier_for(gib: float) -> str:
    """The largest tier whose capacity the memory covers (5% slack: a "16 GB" card reports ~15 GiB)."""
    best = "8GB"
    for name, cap in TIERS.items():
        if gib >= cap * 0.9:
            best = name
    return best


def supports_bf16(capability: tuple[int, int]) -> bool:
    # bf16 tensor cores arrived with Ampere (8.0); a T4 (7.5) trains in fp16
    return capability >= (8, 0)


def supports_fp8(capability: tuple[int, int]) -> bool:
    # FP8 tensor cores arrived with Ada (8.9) and Hopper (9.0).
    return capability >= (8, 9)


# This process's own CUDA context, which mem_get_info counts as used but the memory model plans for itself
# (nbkit.planning.memory's context_gib, measured up to 0.85 GiB): not memory "already in use" by anything else.
OWN_CONTEXT_GIB = 0.85


def check_gpu(device: int = 0) -> GpuInfo:
    import torch

    if not torch.cuda.is_available():
        return GpuInfo(available=False)
    from ..loading.backend import configure_allocator
    from .gpu_holders import holders

    configure_allocator()  # before this process's first CUDA allocation
    props = torch.cuda.get_device_properties(device)
    free, total = torch.cuda.mem_get_info(device)
    name, total_gib, cap = props.name, total / GIB, (props.major, props.minor)
    if _emulated is not None:
        name, total_gib, cap = _emulated
    own = torch.cuda.memory_reserved(device) / GIB
    if _cap_gib:  # a cap bounds torch's reservation; other processes matter once the card has less left than that
        held = _cap_gib - min(_cap_gib - own, free / GIB)
    else:
        held = max(0.0, (total - free) / GIB - OWN_CONTEXT_GIB)
    return GpuInfo(
        available=True,
        name=name,
        capability=cap,
        total_gib=total_gib,
        free_gib=min(free / GIB, _cap_gib or total_gib),
        bf16=supports_bf16(cap),
        fp8=supports_fp8(cap),
        count=torch.cuda.device_count(),
        capped_gib=_cap_gib,
        emulated=_emulated is not None,
        held_gib=held,
        held_by=tuple(holders(held, own)),
    )


def set_emulated(name: str, total_gib: float, capability: tuple[int, int]) -> None:
    """From now on check_gpu() reports this card (nbkit.planning.cards.emulate sets it, with the memory cap)."""
    global _emulated
    _emulated = (name, total_gib, capability)


def emulating() -> str | None:
    """The name of the card being rehearsed, or None."""
    return _emulated[0] if _emulated else None


def end_emulation(device: int = 0) -> None:
    """Report the real card again and lift the memory cap (nbkit.planning.cards.emulate's rehearsal ends)."""
    global _emulated, _cap_gib
    if _cap_gib is not None:
        import torch

        torch.cuda.set_per_process_memory_fraction(1.0, device)
    _emulated = _cap_gib = None


# what allocation failures look like when they do not come as torch.OutOfMemoryError (cuBLAS, bitsandbytes)
_OOM_TEXT = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDA_ERROR_OUT_OF_MEMORY", "cudaErrorMemoryAllocation")


def is_oom(exc: BaseException) -> bool:
    """Whether `exc` is the GPU running out of memory, however the library that hit it spelled it."""
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc) for t in _OOM_TEXT)


def live_vram() -> tuple[float, float, float] | None:
    """(allocated, reserved, peak reserved) GiB from the allocator's host-side counters: no GPU sync.
    None without a CUDA GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    return (torch.cuda.memory_allocated() / GIB, torch.cuda.memory_reserved() / GIB,
            torch.cuda.max_memory_reserved() / GIB)


def all_gpus_memory() -> list[tuple[int, float, float]] | None:
    """(index, used GiB, total GiB) for every GPU this process may see, from NVML: driver counters, so it covers
    other processes (the other ranks of a data-parallel run) and creates no CUDA context. None without NVML."""
    global _nvml_ready
    try:
        import pynvml
    except ImportError:
        return None
    try:
        if not _nvml_ready:
            pynvml.nvmlInit()  # once per process: it costs milliseconds, a reading costs microseconds
            _nvml_ready = True
        out = []
        for shown, physical in enumerate(_visible_indices(pynvml.nvmlDeviceGetCount())):
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(physical))
            out.append((shown, info.used / GIB, info.total / GIB))
        return out
    except pynvml.NVMLError:
        return None


def _visible_indices(count: int) -> list[int]:
    """NVML numbers GPUs physically; CUDA_VISIBLE_DEVICES renumbers them for this process."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or visible.strip() == "":
        return list(range(count)) if visible is None else []
    out = []
    for item in visible.split(","):
        item = item.strip()
        if not item.isdigit():  # UUIDs or MIG names: fall back to physical order rather than guess
            return list(range(count))
        if int(item) < count:
            out.append(int(item))
    return out


def per_gpu_line(readings: list[tuple[int, float, float]] | None) -> str:
    """'GPU0 12.3/80 · GPU1 12.1/80 GiB' for the progress line and gauge of a multi-GPU run."""
    if not readings:
        return ""
    return " · ".join(f"GPU{i} {used:.1f}/{total:.0f}" for i, used, total in readings) + " GiB"


def cap_memory(gib: float, device: int = 0) -> GpuInfo:
    """Limit this process to `gib` of GPU memory, to rehearse a smaller tier on a bigger card."""
    global _cap_gib
    import torch

    if not torch.cuda.is_available():
        raise HardwareError("cap_memory() needs a CUDA GPU; on CPU there is no GPU memory to cap.")
    total = torch.cuda.mem_get_info(device)[1] / GIB
    if gib > total:
        raise HardwareError(f"Cannot cap to {gib} GiB: the GPU has only {total:.1f} GiB.")
    torch.cuda.set_per_process_memory_fraction(gib / total, device)
    _cap_gib = gib
    return check_gpu(device)


def require_fp8(gpu: GpuInfo) -> None:
    if not gpu.available:
        raise HardwareError(
            "FP8 LoRA needs an NVIDIA GPU with compute capability 8.9 or newer (RTX 40xx, L4, H100); this "
            "machine has no CUDA GPU. Use quantization='16bit' or '4bit'."
        )
    if not gpu.fp8:
        raise HardwareError(
            f"FP8 LoRA needs compute capability 8.9+ (Ada/Hopper); {gpu.name} is "
            f"{gpu.capability[0]}.{gpu.capability[1]}. Use quantization='4bit' (least memory) or '16bit'."
        )


def disk_free_gib(folder: str | Path) -> float:
    """Free disk space where `folder` is (or would be created), in GiB."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free / 1024**3
