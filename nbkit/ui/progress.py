"""TrainingProgress: an observer of the run (nbkit.training.events) showing steps, ETA, tokens/s, loss, LR and a loss curve.

It only reads what the run's events carry (values the trainer already brought to the host, the allocator's
host-side counters), so it never forces a GPU synchronisation. The loss curve is redrawn every `plot_interval`
seconds on a thread of its own (matplotlib's Agg, no pyplot state), from a copy of the losses: the training thread
only hands the copy over, so the curve is live without the training waiting for it. With `plot_thread=False`
(tests, or a caller that wants it) it draws on the calling thread, and then only when its last draw cost at most
`plot_budget` of the time since.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from ..training.events import RunObserver, StepInfo
from ..planning.hardware import all_gpus_memory, live_vram, per_gpu_line
from .display import Display, make_display
from .plot import loss_curve_png


def tokens_per_s_label(this_gpu: float, processes: int, unit: str = "tok/s") -> str:
    """Speed as a reader can take it. In a data-parallel run the display (rank 0) counts its own rows only: the
    global figure is its rate times the GPUs, approximate because the other GPUs' rows have other lengths (the
    run's report has the exact total)."""
    unit = f" {unit}" if unit else ""
    if processes <= 1:
        return f"{this_gpu:,.0f}{unit}"
    return f"≈{this_gpu * processes:,.0f}{unit} over {processes} GPUs (this GPU {this_gpu:,.0f})"


def fmt_seconds(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:d}:{s:02d}"


class TrainingProgress(RunObserver):
    def __init__(self, mode: str = "auto", stats_interval: float = 0.5, plot_budget: float = 0.01,
                 text_interval: float = 10.0, clock=time.perf_counter, world_size: int | None = None,
                 plot_interval: float = 2.0, plot_thread: bool = True):
        self.mode = mode
        self.stats_interval = stats_interval
        self.plot_budget = plot_budget
        self.plot_interval = plot_interval
        self.plot_thread = plot_thread
        self._plotting: threading.Thread | None = None
        self.text_interval = text_interval
        self.clock = clock
        self.display: Display | None = None
        self.losses: list[tuple[int, float]] = []
        self.eval_losses: list[tuple[int, float]] = []
        self.lr: float | None = None
        self.step = 0
        self.total = 0
        self.tokens = 0
        self.memory: tuple[float, float, float] | None = None
        if world_size is None:
            from ..gpus.distributed import world_size as launched

            world_size = launched()
        self.world_size = max(1, world_size)
        self.start = 0.0
        self.redraws = 0
        self.plot_seconds = 0.0
        self._last_stats = -1e9
        self._last_plot_end = -1e9
        self._last_plot_cost = 0.0
        self.finished = False
        self.state = "finished"  # how the run ended: finished, stopped or interrupted (nbkit.training.runs)
        self.error: str | None = None
        self.notes: list[str] = []
        self.phase = ""
        self.epoch = None  # nbkit.training.events.EpochPlan: what an epoch is (packing makes fewer, fuller steps)
        # (clock, tokens, step) when the first step ended: that step includes one-off compilation (minutes
        # for FP8), so speed and ETA are measured from there once a second step exists
        self._first: tuple[float, int, int] | None = None

    # --- RunObserver events ------------------------------------------------------------------
    def training_started(self, total_steps: int, first_step: int = 0) -> None:
        self.total, self.step = total_steps, first_step
        self.start = self.clock()
        self._first = None
        self.display = self.display or make_display(self.mode, self.text_interval)
        self.display.begin(self.total)

    def epoch_planned(self, plan) -> None:
        self.epoch = plan
        self._note(plan.describe())

    def phase_changed(self, phase: str, detail: str = "") -> None:
        self.phase = phase
        if phase == "recovering" and detail:
            self._note(f"Recovered: {detail}")

    def step_finished(self, info: StepInfo) -> None:
        self.step, self.tokens = info.step, info.tokens
        if info.memory is not None:
            self.memory = info.memory
        if info.loss is not None:
            self.losses.append((info.step, float(info.loss)))
        if info.eval_loss is not None:
            self.eval_losses.append((info.step, float(info.eval_loss)))
            return
        if info.learning_rate is not None:
            self.lr = float(info.learning_rate)
        if self._first is None:
            self._first = (self.clock(), self.tokens, self.step)
        self._maybe_refresh()

    def stop_requested(self, reason: str) -> None:
        self._note(f"Stopping: {reason}")

    def run_finished(self, result=None) -> None:
        if result is not None:
            self.step = result.steps
            self.state = getattr(result, "state", "finished")
            # the run's own record (a resumed run's includes the steps before the resume): one set of numbers
            self.losses = list(getattr(result, "losses", None) or self.losses)
        self.finished = True
        self._refresh(plot=True, wait=True)  # the final curve, drawn before the summary
        if self.display:
            self.display.end(self.summary())

    def run_failed(self, error: BaseException) -> None:
        self.error = _explain(error)
        if self.display:
            self.display.error(self.error)

    fail = run_failed  # older name

    def _note(self, text: str) -> None:
        self.notes.append(text)
        if self.display:
            self.display.note(text)

    # --- state shown -----------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    def stats(self) -> dict[str, Any]:
        elapsed = self.elapsed
        eta, first_step, tokens_per_s = None, None, (self.tokens / elapsed if elapsed > 0 else 0.0)
        if self._first is not None:
            first_step = self._first[0] - self.start
            since = self.clock() - self._first[0]
            later_steps = self.step - self._first[2]
            if later_steps > 0 and since > 0:
                eta = (self.total - self.step) * since / later_steps
                tokens_per_s = (self.tokens - self._first[1]) / since
        # the first step compiles kernels and grows the allocator (seconds, or minutes for FP8): nothing to
        # estimate the rest from until a second step is timed
        warming = self.step < self.total and (self._first is None or self.step == self._first[2])
        return {
            "step": self.step, "total": self.total, "elapsed": elapsed, "eta": eta, "first_step": first_step,
            "warming_up": warming,
            "tokens_per_s": tokens_per_s,
            "loss": self.losses[-1][1] if self.losses else None, "lr": self.lr,
            "vram": self.memory or live_vram(),
            # a data-parallel run is shown by rank 0 alone, so it reads every GPU from the driver
            "gpus": all_gpus_memory() if self.world_size > 1 else None,
        }

    def stats_line(self) -> str:
        s = self.stats()
        parts = [f"step {s['step']}/{s['total']}", f"elapsed {fmt_seconds(s['elapsed'])}"]
        if self.epoch is not None:
            parts.insert(1, f"epoch {self.epoch.epochs_at(s['step']):.2f}/{self.epoch.epochs:.2f}")
        if s["warming_up"]:
            parts.append("compiling / warming up (ETA after the next step)")
        elif s["eta"] is not None:
            parts.append(f"ETA {fmt_seconds(s['eta'])}")
        parts.append(tokens_per_s_label(s["tokens_per_s"], self.world_size))
        if s["first_step"] and s["step"] > 1 and s["first_step"] > 0.25 * s["elapsed"]:
            parts.append(f"first step {fmt_seconds(s['first_step'])} (one-off compilation; not in ETA or tok/s)")
        if s["loss"] is not None:
            parts.append(f"loss {s['loss']:.4f}")
        if s["lr"] is not None:
            parts.append(f"lr {s['lr']:.2e}")
        if s["vram"]:
            parts.append("VRAM {:.2f}/{:.2f} GiB (peak {:.2f})".format(*s["vram"]))
        if s["gpus"]:
            parts.append(per_gpu_line(s["gpus"]))
        return " | ".join(parts)

    def summary(self) -> str:
        s = self.stats()
        text = (f"Training finished: {s['step']} steps in {fmt_seconds(s['elapsed'])}" if self.state == "finished"
                else f"Training {self.state} at step {s['step']}/{s['total']} after {fmt_seconds(s['elapsed'])}")
        if self.epoch is not None:
            text += f" ({self.epoch.epochs_at(s['step']):.2f} epochs, {self.tokens:,} real tokens)"
        if self.losses:
            text += f", loss {self.losses[0][1]:.4f} → {self.losses[-1][1]:.4f}"
        whole = self.tokens / s["elapsed"] if s["elapsed"] > 0 else 0.0
        text += ", " + tokens_per_s_label(whole, self.world_size, "tokens/s")
        if self.step > 2 and abs(s["tokens_per_s"] - whole) > 0.1 * max(whole, 1.0):
            text += f" ({tokens_per_s_label(s['tokens_per_s'], self.world_size, '')} after the first step)"
        if s["vram"]:
            text += f", peak VRAM {s['vram'][2]:.2f} GiB"
        return text + "."

    # --- throttling ------------------------------------------------------------------------
    def _maybe_refresh(self) -> None:
        now = self.clock()
        if now - self._last_stats < self.stats_interval:
            return
        since_plot = now - self._last_plot_end
        plot_due = since_plot >= self.plot_interval and (
            self.plot_thread or self._last_plot_cost <= self.plot_budget * since_plot)
        self._refresh(plot=plot_due and self.display is not None and self.display.wants_plot)

    def _refresh(self, plot: bool, wait: bool = False) -> None:
        if self.display is None:
            return
        self._last_stats = self.clock()
        self.display.stats(self.stats_line(), self.stats())
        if not (plot and self.display.wants_plot and (self.losses or self.eval_losses)):
            return
        busy = self._plotting is not None and self._plotting.is_alive()
        if busy and not wait:
            return  # one curve at a time: the next is due after this one
        if busy:
            self._plotting.join()
        losses, evals = list(self.losses), list(self.eval_losses)  # a copy: the run goes on meanwhile
        self._last_plot_end = self.clock()  # due again plot_interval after this one began
        if self.plot_thread and not wait:
            self._plotting = threading.Thread(target=self._draw, args=(losses, evals), name="nbkit-plot",
                                              daemon=True)
            self._plotting.start()
        else:
            self._draw(losses, evals)

    def _draw(self, losses, evals) -> None:
        t0 = self.clock()
        self.display.plot(loss_curve_png(losses, evals))
        self._last_plot_cost = self.clock() - t0
        self.plot_seconds += self._last_plot_cost
        self.redraws += 1
        if not self.plot_thread:
            self._last_plot_end = self.clock()


def _explain(exc: BaseException) -> str:
    from ..errors import HardwareError

    text = str(exc)
    if isinstance(exc, HardwareError) or "out of memory" in text.lower():
        return f"Training stopped: out of GPU memory. {text}"
    return f"Training stopped on an error: {type(exc).__name__}: {text}"
