"""What happens after the last step, as a state of the run folder: the adapters are saved first, then each later
stage (the verification, the after-sample, the exports, the report) is ticked off the folder's `todo`.

Whatever fails or interrupts after the save (an error, Ctrl-C, SIGTERM) leaves a saved run: its folder says what
is missing (`todo`, `cut_short`), `nbkit export RUN` finishes the exports, and the error says so in one line.
A signal that arrives while the adapters are being written waits until they are (a second Ctrl-C does not).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

from ..errors import AfterTrainingError, ExportError, TrainingInterrupted
from ..gpus import distributed, fsdp
from ..training import runs
from ..training.runs import STAGES, finish_command, one_line


class Finishing:
    """The stages after training, for one run. `with Finishing(...) as finish:` holds Ctrl-C and SIGTERM as
    interrupts of the stage they arrive in (SIGTERM otherwise ends the process without a word); on rank 0 the
    folder records each stage done; every rank leaves together (rank 0 tells the others how it went)."""

    def __init__(self, loaded, result, todo: list[str], record: bool = True):
        self.loaded, self.result, self.record = loaded, result, record
        self.folder = Path(loaded.config.output_dir)
        self.adapter_dir = self.folder / "lora_adapters"
        self.todo = ["save", *todo]
        self.cut_short: list[str] = []
        self.failures: dict[str, str] = {}  # stages that failed without ending the run (the exports)
        self.report = None  # the WorkflowReport, once there is one: errors carry it
        self._held: str | None = None  # a signal that arrived while the adapters were written
        self._holding = False

    # --- the signals, as interrupts of the stage they arrive in --------------------------------------------------
    def __enter__(self) -> "Finishing":
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        # every rank leaves here together: rank 0 says whether its stages went through
        failure = distributed.from_main(None if exc is None else one_line(exc))
        if failure and exc is None and not self.record:
            raise ExportError(f"Rank 0 could not finish this run: {failure}")

    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self._holding and not (signum == signal.SIGINT and self._held == "SIGINT"):
            self._held = self._held or name
            print(f"nbkit: {name}: stopping once the adapters are saved (a second Ctrl-C stops at once)")
            return
        raise TrainingInterrupted(name, signal_name=name)

    # --- the stages ---------------------------------------------------------------------------------------------
    def save(self) -> None:
        """The adapters, before anything else (rank 0 writes; a sharded model's are gathered by every rank first).
        A full disk saves them to a rescue folder and raises saying where; the other ranks stop with the reason."""
        from . import export

        if fsdp.sharded(self.loaded.config):
            self.loaded.adapter_state = fsdp.full_adapter_state(self.loaded.model)
        failure = None
        if self.record:
            self._note()  # from now on the folder says what is left, even after a kill -9
            self._holding = True
            try:
                # a stopped run's adapters are saved too: what Resume or an explicit export continues from
                export.save_lora(self.loaded, self.adapter_dir, allow_unfinished=True)
            except Exception as exc:  # noqa: BLE001 — any failure here is said with where the adapters are
                failure = exc
            except KeyboardInterrupt:  # a second Ctrl-C: the user would rather stop than wait for the save
                raise self._save_interrupted() from None
            finally:
                self._holding = False
        said = distributed.from_main(None if failure is None else one_line(failure))
        if failure is not None:
            raise self._save_failed(failure)
        if said:
            raise ExportError(f"Rank 0 could not save this run, so it is not saved: {said}")
        self._done("save")

    @contextlib.contextmanager
    def stage(self, name: str, tolerate: bool = False):
        """Run one stage: done, it leaves `todo`; failed, the folder says so and an AfterTrainingError (one line,
        with the command that finishes the run) is raised; `tolerate` (an export) records the failure instead and
        goes on. Interrupted (Ctrl-C, SIGTERM): recorded, and TrainingInterrupted is raised."""
        try:
            if self._held:  # arrived while the adapters were written: honoured now that they are
                raise TrainingInterrupted(self._held, signal_name=self._held)
            yield
        except KeyboardInterrupt as exc:
            sig = getattr(exc, "signal", None) or "SIGINT"
            self._cut(f"interrupted ({sig}) during {STAGES[name]}")
            raise TrainingInterrupted(self.message(f"Interrupted ({sig}) after training, during {STAGES[name]}"),
                                      self.result, self.loaded, str(self.adapter_dir), sig) from None
        except Exception as exc:  # noqa: BLE001 — after the save, any failure leaves a saved run
            self._cut(f"{STAGES[name]} failed: {one_line(exc)}")
            if tolerate:
                label = STAGES[name].removeprefix("the ")  # "merged export", "GGUF export"
                self.failures[label] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                return
            err = AfterTrainingError(self.message(f"{self._trained()}, but {STAGES[name]} failed: "
                                                  f"{one_line(exc)}"))
            err.loaded, err.result, err.adapter_dir, err.report = self.loaded, self.result, self.adapter_dir, \
                self.report
            raise err from exc
        else:
            self._done(name)

    # --- what the folder and the messages say ------------------------------------------------------------------
    def message(self, lead: str) -> str:
        """One line: what happened, where the adapters are, what is not done, the command that finishes it."""
        marker = {"status": self.result.state, "todo": self.todo}
        rest = f" Not done: {', '.join(STAGES[t] for t in self.todo)}." if self.todo else ""
        return (f"{lead}. The adapters are saved in {self.adapter_dir}.{rest} Finish it with: "
                f"{finish_command(self.folder, marker)}")

    def _trained(self) -> str:
        r = self.result
        return "Training finished" if r.finished else f"Training {r.state} at step {r.steps}/{r.total}"

    def _done(self, name: str) -> None:
        if name in self.todo:
            self.todo.remove(name)
        self._note()

    def _cut(self, why: str) -> None:
        self.cut_short.append(why)
        self._note()

    def _note(self) -> None:
        if self.record:
            runs.note(self.folder, todo=self.todo or None, cut_short="; ".join(self.cut_short) or None)

    def _save_interrupted(self) -> TrainingInterrupted:
        from ..training import outputs

        self._cut("interrupted (SIGINT) while saving the adapters")
        newest, _ = outputs.newest_checkpoint(self.folder)
        fix = (f"nbkit export {self.folder} rebuilds them from {newest.name}" if newest is not None else
               "train again (no checkpoint was kept)")
        return TrainingInterrupted(f"Interrupted twice (SIGINT) while the adapters were being saved: they are not "
                                   f"saved; {fix}.", self.result, self.loaded, None, "SIGINT")

    def _save_failed(self, exc: Exception) -> ExportError:
        self._cut(f"saving the adapters failed: {one_line(exc)}")
        saved = getattr(exc, "saved_to", None)
        where = "" if saved else (f" Free disk space, then resume from the newest checkpoint in {self.folder} "
                                  "(--resume), or train again.")
        # the trained adapters are still in memory: a Python caller can save them elsewhere from this error
        err = ExportError(f"{self._trained()} but saving the adapters failed: {str(exc).strip() or exc!r}{where}")
        err.loaded, err.result, err.saved_to, err.report = self.loaded, self.result, saved, self.report
        return err
