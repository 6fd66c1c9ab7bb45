"""Data-parallel runs (torchrun / accelerate launch): which process shows progress and saves.

The trainer itself does the distribution (HF Trainer over torch.distributed: NCCL on GPUs, gloo on CPU);
nbkit only keeps one process talking and writing, and checks that every rank ended with the same adapters.
"""
from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if _initialized():
        import torch.distributed as dist

        dist.barrier()


def gather(value) -> list:
    """`value` from every rank (a one-element list outside a distributed run)."""
    if not _initialized():
        return [value]
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out
