"""A run's life as events, for whoever watches it: progress views, the gauge, the CLI, benchmark timers.

The core publishes; it never knows who listens. An observer subclasses `RunObserver` and overrides the
methods it cares about. A stop request (a button, Ctrl-C, a signal, an observer of its own) goes through
`StopControl` and ends the run at the next optimizer-step boundary, with a resumable checkpoint there.
transformers' `TrainerCallback` is the model: the trainer never imports display code.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Iterable

# the phases a run goes through, in order; "recovering" only after an out-of-memory step
PHASES = ("loading", "preparing", "warming_up", "training", "recovering", "saving", "done")


@dataclass(frozen=True)
class StepInfo:
    """One finished optimizer step, as the host already knows it (no GPU synchronisation to build it)."""
    step: int
    total: int
    loss: float | None  # None when this step logged no loss (logging_steps > 1)
    learning_rate: float | None
    tokens: int  # real (non-padding) tokens trained on so far in this process
    seconds: float  # since training began
    memory: tuple[float, float, float] | None = None  # (allocated, reserved, peak reserved) GiB; None on CPU
    eval_loss: float | None = None
    grad_norm: float | None = None


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch is, known when training starts: packing makes fewer, fuller steps of the same rows."""
    steps_per_epoch: int  # optimizer steps in an epoch
    total_steps: int  # this run's
    rows: int  # training rows in an epoch
    sequences: int  # what is batched: packed sequences, or the rows themselves
    tokens: int  # real (non-padding) tokens in an epoch
    packed: bool

    def epochs_at(self, step: int) -> float:
        """Epochs trained once `step` optimizer steps are done."""
        return step / max(1, self.steps_per_epoch)

    @property
    def epochs(self) -> float:
        return self.epochs_at(self.total_steps)

    def describe(self) -> str:
        what = (f"{self.rows} rows packed into {self.sequences} sequences" if self.packed else f"{self.rows} rows")
        return (f"One epoch: {what}, {self.tokens:,} real tokens, {self.steps_per_epoch} optimizer steps; this run: "
                f"{self.total_steps} steps = {self.epochs:.2f} epochs.")


class RunObserver:
    """No-op base: override what you watch. Called on the training thread; keep each call short."""

    def run_planned(self, config, breakdown) -> None:
        """Before loading: the settings and the predicted memory (a memory.Breakdown, or None on CPU)."""

    def phase_changed(self, phase: str, detail: str = "") -> None:
        """One of PHASES began; `detail` says what in words."""

    def training_started(self, total_steps: int, first_step: int = 0) -> None:
        """The trainer is about to run steps first_step+1 … total_steps (first_step > 0 when resuming)."""

    def epoch_planned(self, plan: EpochPlan) -> None:
        """Training starts: what an epoch holds and how many optimizer steps it takes."""

    def step_finished(self, info: StepInfo) -> None:
        """An optimizer step ended."""

    def stop_requested(self, reason: str) -> None:
        """Someone asked the run to stop; it stops at the next step boundary."""

    def run_finished(self, result) -> None:
        """Training ended normally or by a stop request (result.stopped says which)."""

    def run_failed(self, error: BaseException) -> None:
        """Training ended on an error (already translated into an nbkit error where it is the user's to fix)."""


class RunEvents(RunObserver):
    """Fans each event out to every observer. A broken observer is reported once and dropped: a view must not
    be able to kill a training run."""

    def __init__(self, observers: Iterable[RunObserver] = ()):
        self.observers = [o for o in observers if o is not None]

    def add(self, observer: RunObserver) -> None:
        self.observers.append(observer)

    def _emit(self, name: str, *args) -> None:
        for obs in list(self.observers):
            try:
                getattr(obs, name)(*args)
            except Exception:  # noqa: BLE001 — isolate views from the run
                self.observers.remove(obs)
                print(f"nbkit: observer {type(obs).__name__} failed in {name} and was removed:\n"
                      f"{traceback.format_exc(limit=3)}", file=sys.stderr)

    def run_planned(self, config, breakdown) -> None:
        self._emit("run_planned", config, breakdown)

    def phase_changed(self, phase: str, detail: str = "") -> None:
        self._emit("phase_changed", phase, detail)

    def training_started(self, total_steps: int, first_step: int = 0) -> None:
        self._emit("training_started", total_steps, first_step)

    def epoch_planned(self, plan: EpochPlan) -> None:
        self._emit("epoch_planned", plan)

    def step_finished(self, info: StepInfo) -> None:
        self._emit("step_finished", info)

    def stop_requested(self, reason: str) -> None:
        self._emit("stop_requested", reason)

    def run_finished(self, result) -> None:
        self._emit("run_finished", result)

    def run_failed(self, error: BaseException) -> None:
        self._emit("run_failed", error)


class StopControl:
    """A thread-safe stop flag. `request(reason)` from any thread; the training loop reads `requested`."""

    def __init__(self, events: RunObserver | None = None):
        self._event = threading.Event()
        self.reason = ""
        self.signal: str | None = None  # "SIGINT"/"SIGTERM" when the request came from an interrupt
        self.events = events

    @property
    def interrupted(self) -> bool:
        """Asked by an interrupt (the kernel's Interrupt, Ctrl-C, SIGTERM) rather than a button or an observer."""
        return self.signal is not None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str = "stop requested", signal_name: str | None = None) -> None:
        if self._event.is_set():
            return
        self.reason, self.signal = reason, signal_name
        self._event.set()
        if self.events is not None:
            self.events.stop_requested(reason)

    def clear(self) -> None:
        self._event.clear()
        self.reason, self.signal = "", None

    @contextlib.contextmanager
    def telling(self, events: RunObserver | None):
        """While inside, a stop asked is told to `events` (a run's observers), then to whoever was told before:
        one StopControl kept across runs (the launcher's) tells each run's own observers, and none after."""
        before = self.events
        self.events = events
        try:
            yield self
        finally:
            self.events = before

    @contextlib.contextmanager
    def on_interrupt(self):
        """While inside, the first Ctrl-C (or Jupyter's interrupt, which is SIGINT) asks for a stop at the next
        step boundary instead of tearing through the step; a second one interrupts at once. SIGTERM (a machine
        being preempted or shut down) asks for the same stop. Only the main thread can own signals, so elsewhere
        (a launcher's training thread) this does nothing: use `request()`."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        reasons = {signal.SIGINT: "interrupted (Ctrl-C or the notebook's stop button)",
                   signal.SIGTERM: "the system asked the process to end (SIGTERM)"}
        previous = {sig: signal.getsignal(sig) for sig in reasons}

        def handler(signum, frame):
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.request(f"{reasons[signum]}: saving at the end of this step", signal.Signals(signum).name)

        for sig in reasons:
            signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def as_events(observers: Any) -> RunEvents:
    """RunEvents from None, one observer, a list of them, or RunEvents itself."""
    if isinstance(observers, RunEvents):
        return observers
    if observers is None or observers is False:
        return RunEvents()
    if isinstance(observers, RunObserver):
        return RunEvents([observers])
    return RunEvents(list(observers))
