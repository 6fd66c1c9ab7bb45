"""A runner owns one run at a time: the thread it runs on, its stop control, and its outcome.

The launcher (its training and export), the chat box (its answers) and the command line all run their work
through a Runner, so that what a run is doing, how it is stopped and how it ended live in one place, and a view
only draws it. The work is any callable `work(stop, events)`: it reads `stop` (nbkit.training.events.StopControl:
training ends at the next step boundary once a stop is asked) and publishes what happens to `events` (the
runner's observers and the ones passed for this run). `start()` runs it on a thread of its own and returns at
once; `run()` runs it on the calling thread, which keeps a command line's Ctrl-C and SIGTERM (the stop control
turns them into a stop at a step boundary: signals reach only the main thread).

This sits above the workflow (its `training()` work is `nbkit.workflow.run`) and below the views; it imports no
view.
"""
from __future__ import annotations

import contextlib
import threading
import traceback
from typing import Any, Callable

from .errors import NbkitError
from .training.events import RunEvents, StopControl, as_events

Work = Callable[[StopControl, RunEvents], Any]


class RunInProgress(NbkitError, RuntimeError):
    """A run was started on a runner whose run is still going."""


class Runner:
    """One run at a time: `start(work)` (a thread) or `run(work)` (this thread), `stop()`, `running`, `wait()`,
    then `result` or `error`. `on_end(fn)` registers `fn(runner)`, called on the run's thread once the run has
    ended (its result or error set, `running` already False)."""

    def __init__(self, name: str = "nbkit-run", observers: Any = ()):
        self.name = name
        self.control = StopControl()  # kept across runs: cleared when one starts
        self.observers = list(observers)  # RunObservers that watch every run of this runner
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None  # the thread start() made (None for a run() on the caller's)
        self._active = False
        self._lock = threading.Lock()
        self._ended: list[Callable[[Runner], None]] = []

    @property
    def running(self) -> bool:
        """A run is going: seen from another thread, until its thread has ended (its end listeners included); on
        the run's own thread, no longer once the work has returned (its end listeners may draw a new start)."""
        if self._active:
            return True
        thread = self.thread
        return thread is not None and thread is not threading.current_thread() and thread.is_alive()

    @property
    def stop_requested(self) -> bool:
        return self.control.requested

    def on_end(self, listener: Callable[["Runner"], None]) -> Callable[["Runner"], None]:
        self._ended.append(listener)
        return listener

    def start(self, work: Work, *, observers: Any = (), wait: bool = False) -> threading.Thread:
        """Run `work` on a thread of its own and return that thread at once (`wait=True`: once it has ended).
        A run still going is never replaced: RunInProgress says so."""
        events = self._begin(observers)
        self.thread = threading.Thread(target=self._run, args=(work, events), name=self.name, daemon=True)
        self.thread.start()
        if wait:
            self.wait()
        return self.thread

    def run(self, work: Work, *, observers: Any = ()) -> Any:
        """Run `work` on this thread: its result, or its error raised (and kept in `error`) after the end
        listeners ran. On the main thread, Ctrl-C and SIGTERM during training ask for a stop at a step boundary."""
        events = self._begin(observers)
        self.thread = None
        self._run(work, events)
        if self.error is not None:
            raise self.error
        return self.result

    def stop(self, reason: str = "stop requested") -> bool:
        """Ask the run to end at the next step boundary (a training run keeps a resumable checkpoint there).
        False when no run is going."""
        if not self.running:
            return False
        self.control.request(reason)
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run and its end listeners are done, or `timeout` seconds; True when it has ended."""
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        return not self.running

    def _begin(self, observers: Any) -> RunEvents:
        with self._lock:
            if self.running:
                raise RunInProgress(f"{self.name}: a run is still going; stop it (stop()) or wait for it to end "
                                    "(wait()) before starting another.")
            self._active = True
        self.control.clear()
        self.result, self.error = None, None
        events = as_events([*self.observers, *(as_events(observers).observers)])
        self.control.events = events  # a stop asked through the runner is told to the run's observers
        return events

    def _run(self, work: Work, events: RunEvents) -> None:
        try:
            self.result = work(self.control, events)
        except BaseException as exc:  # noqa: BLE001 — the run's outcome, for whoever draws or raises it
            self.error = exc
        finally:
            self._active = False
            for listener in list(self._ended):
                try:
                    listener(self)
                except Exception:  # noqa: BLE001 — one view failing to draw must not keep the others from it
                    traceback.print_exc()


def training(config, *, engine: str | None = None, bars_off: bool = False, **options: Any) -> Work:
    """The work of a whole run (nbkit.workflow.run with `options`) for a Runner: the training engine imported
    first (Unsloth before transformers; `engine` as nbkit.loading.backend.ensure takes it, "auto" when None),
    with the libraries' own progress bars off while it loads and trains when `bars_off` (a view that draws its
    own progress)."""

    def work(stop: StopControl, events: RunEvents):
        from . import workflow
        from .loading import backend

        backend.ensure(*([engine] if engine else []))
        with backend.library_bars_off() if bars_off else contextlib.nullcontext():
            return workflow.run(config, observers=events, stop=stop, **options)

    return work


def saving(kind: str, folder, loaded=None) -> Work:
    """The work of one export for a Runner: the trained model saved as `kind` ("lora", "merged", "gguf" q8_0)
    into its run's `folder`, with the functions the notebooks call; the saved folder is its result. Without
    `loaded` (a run from an earlier kernel, or one whose model was released since) it is exported from disk."""

    def work(stop: StopControl, events: RunEvents):
        from pathlib import Path

        from .exporting import export

        out = Path(folder)
        adapters = out / "lora_adapters"
        if loaded is None:
            return export.from_run(out, merged=kind == "merged", gguf="q8_0" if kind == "gguf" else None)[kind]
        if kind == "lora":
            return export.save_lora(loaded, adapters)
        if kind == "merged":
            return export.save_merged(loaded, out / "merged_16bit", adapters)
        return export.save_gguf(loaded, out / "gguf", adapter_dir=adapters)

    return work
