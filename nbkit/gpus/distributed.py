"""Data-parallel runs (torchrun / accelerate launch): which process shows progress and saves.

The trainer itself does the distribution (HF Trainer over torch.distributed: NCCL on GPUs, gloo on CPU);
nbkit only keeps one process talking and writing, and checks that every rank ended with the same adapters.
"""
from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's GPU on its host (torchrun and accelerate set LOCAL_RANK)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    """Processes in this run, from the launcher's environment (known before the process group exists)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def gather(value) -> list:
    """`value` from every rank (a one-element list outside a distributed run)."""
    if not _initialized():
        return [value]
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def from_main(value):
    """Rank 0's `value` on every rank (doubles as a barrier): how rank 0 tells the others how its save went."""
    if not _initialized():
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_ranks(value: int, on_cuda: bool) -> int:
    """`value` added up over every rank (itself outside a distributed run): one small collective."""
    if not _initialized():
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device="cuda" if on_cuda else "cpu")
    dist.all_reduce(t)
    return int(t.item())


def barrier() -> None:
    """Wait for every rank (nothing outside a distributed run)."""
    if _initialized():
        import torch.distributed as dist

        dist.barrier()


def shutdown() -> None:
    """End the process group the trainer started (torch warns, and may leak NCCL resources, otherwise)."""
    if _initialized():
        import torch.distributed as dist

        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port free on localhost now, for a rendezvous or a local server."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
