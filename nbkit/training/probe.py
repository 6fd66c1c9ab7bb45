"""Confirm a batch size by training on it: a few steps at full sequence length under the current memory cap.

memory.largest_batch() predicts; probe_batch() checks the prediction on the GPU in hand. The probe trains the
real model, so it snapshots the LoRA tensors first and puts them back afterwards: the model is exactly as it
was before the probe (the optimizer is the probe trainer's own and is dropped with it).
"""
from __future__ import annotations

import gc
import math
import tempfile
from dataclasses import dataclass, field
from typing import Callable

from ..loading.data import PreparedData
from ..loading.models import LoadedModel


@dataclass
class ProbeResult:
    predicted: int
    largest: int  # largest batch that trained (0: not even the smallest tried)
    tried: dict[int, bool] = field(default_factory=dict)  # batch -> trained without OOM
    peak_gib: dict[int, float] = field(default_factory=dict)

    def summary(self) -> str:
        tried = ", ".join(f"{b}{'✓' if ok else '✗'}" for b, ok in sorted(self.tried.items()))
        return f"predicted batch {self.predicted}, largest that trained {self.largest} (tried {tried})"


def search(predicted: int, trains: Callable[[int], bool], grow: float = 0.0, max_up: int = 3) -> ProbeResult:
    """Try `predicted`; on failure step down (halving, then one by one) until a batch trains.

    With `grow` > 0, after a success keep trying batches `grow` larger (at least +1) up to `max_up` times, to
    find how much room the prediction left. Each batch is tried at most once.
    """
    result = ProbeResult(predicted, 0)

    def attempt(b: int) -> bool:
        if b not in result.tried:
            result.tried[b] = trains(b)
        return result.tried[b]

    batch = max(1, predicted)
    if attempt(batch):
        result.largest = batch
        for _ in range(max_up if grow > 0 else 0):
            nxt = max(batch + 1, math.ceil(batch * (1 + grow)))
            if not attempt(nxt):
                break
            batch = result.largest = nxt
        return result
    low, high = 0, batch  # low trains (0 = trivially), high does not
    while high - low > 1:
        mid = (low + high) // 2
        if attempt(mid):
            low = mid
        else:
            high = mid
    result.largest = low
    return result


def synthetic_rows(n_rows: int, seq: int, vocab: int, seed: int = 0) -> PreparedData:
    """Rows of exactly `seq` labelled tokens: the longest batch the run can see, which is what must fit."""
    import datasets
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, max(11, vocab), (n_rows, seq), generator=g).tolist()
    ds = datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * seq] * n_rows, "labels": ids})
    return PreparedData(ds, None, "probe", n_rows)


def probe_batch(loaded: LoadedModel, predicted: int, steps: int = 2, grow: float = 0.0, max_up: int = 3,
                on_result: Callable[[int, bool, float | None, float | None], None] | None = None) -> ProbeResult:
    """Train `steps` steps at each tried batch (full max_seq_length rows); see search() for the order.

    `on_result(batch, ok, peak_gib, step_seconds)` is called after each try (progress for long probes).
    """
    import torch

    from . import train
    from ..planning.hardware import is_oom
    from .adapters import snapshot

    saved = snapshot(loaded.model)
    seq = loaded.config.max_seq_length
    vocab = len(loaded.tokenizer)
    peaks: dict[int, float] = {}

    def trains(batch: int) -> bool:
        data = synthetic_rows(batch * steps, seq, vocab)
        timer = train.synced_step_timer(warmup=1 if steps > 1 else 0)  # the first step compiles
        if loaded.on_cuda:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        ok = True
        with tempfile.TemporaryDirectory() as tmp:
            try:
                trainer = train.build_trainer(loaded, data, events=[timer], output_dir=tmp,
                                              per_device_train_batch_size=batch,
                                              gradient_accumulation_steps=1, max_steps=steps, save_strategy="no",
                                              eval_strategy="no", warmup_steps=0)
                trainer.train()
            except (torch.OutOfMemoryError, RuntimeError) as exc:  # cuBLAS/bitsandbytes fail as RuntimeError
                if not is_oom(exc):
                    raise
                ok = False
            finally:
                trainer = None  # noqa: F841 — drop optimizer state and activations before the next try
                gc.collect()
                if loaded.on_cuda:
                    torch.cuda.empty_cache()
        peak = torch.cuda.max_memory_reserved() / 1024**3 if loaded.on_cuda else None
        if peak is not None:
            peaks[batch] = peak
        if on_result:
            on_result(batch, ok, peak, timer.steady() if ok else None)
        return ok

    try:
        result = search(predicted, trains, grow, max_up)
    finally:
        _restore(loaded.model, saved)
    result.peak_gib = peaks
    return result


def settle_batch(config, result: ProbeResult):
    """The config to train with after a probe, and a note saying what changed. A batch that did not train is
    replaced by one that did, with more accumulation: preferably a batch that divides the effective batch (so it
    stays exactly the same), else the largest that trained with the nearest accumulation."""
    from ..errors import HardwareError

    if result.largest >= config.batch_size:
        return config, f"probe: batch {config.batch_size} trained at {config.max_seq_length} tokens on this GPU"
    if result.largest == 0:
        raise HardwareError(f"Not even batch 1 trained at {config.max_seq_length} tokens on this GPU. Use a shorter "
                            f"max_seq_length, quantization='4bit', or a smaller model.")
    effective = config.batch_size * config.grad_accum
    # giving up at most half the batch keeps the GPU about as busy
    exact = [b for b in range(result.largest, (result.largest + 1) // 2 - 1, -1) if effective % b == 0]
    batch = exact[0] if exact else result.largest
    new = config.replace(batch_size=batch, grad_accum=max(1, round(effective / batch)))
    changed = "" if new.batch_size * new.grad_accum == effective else f", was {effective}"
    return new, (f"probe: batch {config.batch_size} ran out of memory (largest that trained: {result.largest}); "
                 f"training with batch {new.batch_size} × {new.grad_accum} accumulation instead "
                 f"(effective {new.batch_size * new.grad_accum}{changed})")


def _restore(model, saved: dict) -> None:
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in saved:
                p.copy_(saved[name].to(device=p.device, dtype=p.dtype))
