"""What a training run produced and how fast: TrainResult, and the exact step timer the benchmarks use."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import outputs
from .events import RunObserver


class StepTimer(RunObserver):
    """Times each optimizer step with a CUDA sync at every step boundary: exact step times, for measuring (the
    probe, the benchmarks), never for ordinary training. An observer like any view; for a trainer nbkit did not
    build (the benchmarks' baselines), attach `trainer_bridge.bridge(RunEvents([timer]))` to it.
    `steady()` is the median after the first `warmup` steps, which include compilation; None until there is such
    a step."""

    def __init__(self, warmup: int = 2):
        import torch

        self.warmup = warmup
        self._sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
        self.times: list[float] = []
        self._last = self.started_at = 0.0

    def training_started(self, total_steps: int, first_step: int = 0) -> None:
        self._sync()
        self._last = self.started_at = time.perf_counter()

    def step_finished(self, info) -> None:
        if info.eval_loss is not None:
            return
        self._sync()
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now

    def steady(self) -> float | None:
        rest = self.times[self.warmup:]
        return statistics.median(rest) if rest else None


def synced_step_timer(warmup: int = 2) -> StepTimer:
    return StepTimer(warmup)


@dataclass
class TrainResult:
    steps: int
    losses: list[tuple[int, float]]
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    tokens: int = 0
    peak_vram_gib: float | None = None  # reserved: what the card had to hold for torch
    output_dir: str = ""
    checkpoints: list[str] = field(default_factory=list)
    # (seconds since start, tokens so far) at each optimizer step's end, for speed after warm-up
    step_marks: list[tuple[float, int]] = field(default_factory=list)
    peak_allocated_gib: float | None = None  # what tensors actually used at the peak
    stopped: bool = False  # ended early by a stop request (a resumable checkpoint is in `checkpoints`)
    stop_reason: str = ""
    resumed_from: str | None = None
    notes: list[str] = field(default_factory=list)  # OOM recoveries and other changes made on the way
    processes: int = 1  # data-parallel GPUs: `tokens` is their total, `tokens_this_rank` this process's share
    tokens_this_rank: int = 0
    state: str = "finished"  # or "stopped" (asked: a button, an observer) or "interrupted" (nbkit.training.runs)
    total: int = 0  # the steps the run was set to train
    packing: Any = None  # nbkit.loading.packing.PackingPlan: what an epoch held, packed or not

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    @property
    def tokens_per_second(self) -> float:
        """Over the whole run, first-step compilation included: what the wall clock saw."""
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    def steady_tokens_per_second(self, warmup: int = 2) -> float | None:
        """After the first `warmup` steps (compilation, allocator growth): the speed a longer run settles at.
        None when the run had too few steps to tell."""
        if len(self.step_marks) < warmup + 2:
            return None
        (t0, n0), (t1, n1) = self.step_marks[warmup], self.step_marks[-1]
        # the marks count this process's rows; with data parallelism every GPU trains as many rows per step
        return self.processes * (n1 - n0) / (t1 - t0) if t1 > t0 else None

    @property
    def first_loss(self) -> float:
        return self.losses[0][1]

    @property
    def final_loss(self) -> float:
        return self.losses[-1][1]

    def summary(self) -> str:
        peak = ""
        if self.peak_vram_gib is not None:
            peak = f", peak VRAM {self.peak_vram_gib:.2f} GiB reserved"
            if self.peak_allocated_gib is not None:
                peak += f" ({self.peak_allocated_gib:.2f} allocated)"
        steady = self.steady_tokens_per_second()
        after = (f" ({steady:,.0f} after warm-up)" if steady and abs(steady - self.tokens_per_second)
                 > 0.1 * self.tokens_per_second else "")
        loss = f", loss {self.first_loss:.3f} → {self.final_loss:.3f}" if self.losses else ""
        stopped = f" ({self.state} early: {self.stop_reason})" if self.stopped else ""
        steps = f"{self.steps}/{self.total}" if self.stopped and self.total else str(self.steps)
        gpus = ""
        if self.processes > 1:
            gpus = (f" over {self.processes} GPUs (this GPU "
                    f"{self.tokens_this_rank / self.train_seconds if self.train_seconds else 0:,.0f})")
        return (f"{steps} steps in {self.train_seconds:.1f} s{stopped}{loss}, "
                f"{self.tokens_per_second:,.0f} tokens/s{gpus}{after}{peak}")


def result_from(trainer, seconds: float, on_cuda: bool, marks=()) -> TrainResult:
    history = trainer.state.log_history
    losses = [(h["step"], float(h["loss"])) for h in history if "loss" in h]
    evals = [(h["step"], float(h["eval_loss"])) for h in history if "eval_loss" in h]
    peak = allocated = None
    if on_cuda:
        import torch

        peak = torch.cuda.max_memory_reserved() / 1024**3
        allocated = torch.cuda.max_memory_allocated() / 1024**3
    out = Path(trainer.args.output_dir)
    checkpoints = [str(p) for p in outputs.checkpoints(out) if outputs.is_complete(p)]
    from ..gpus.distributed import sum_over_ranks, world_size

    mine = trainer.nbkit_token_counter.tokens
    return TrainResult(
        steps=trainer.state.global_step, losses=losses, eval_losses=evals, train_seconds=seconds,
        tokens=sum_over_ranks(mine, on_cuda), peak_vram_gib=peak, output_dir=str(out),
        checkpoints=checkpoints, step_marks=list(marks), peak_allocated_gib=allocated,
        processes=world_size(), tokens_this_rank=mine, total=trainer.state.max_steps,
    )
