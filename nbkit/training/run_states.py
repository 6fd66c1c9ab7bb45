"""A run folder's states in words, and what each allows: what a run trained to (RunState), how a marker reads
('finished (60/60 steps)', 'interrupted at step 4/15'), what a saved run is missing after its last step, and the
command that finishes it. nbkit.training.runs decides and records; this module only reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import ownership
from ..errors import UnfinishedRunError

PREPARING, TRAINING, STOPPED, INTERRUPTED = "preparing", "training", "stopped", "interrupted"
FAILED, DIVERGED, FINISHED = "failed", "diverged", "finished"
UNFINISHED = (STOPPED, INTERRUPTED)  # ended early on purpose, with a checkpoint to resume from
ACTIVE = ("running", PREPARING, TRAINING)
EXPORTS = ("merged", "gguf")  # what a run may be asked to export besides its adapters
# what is left to do after the last step, as the marker's `todo` names it, in words
STAGES = {"save": "saving the adapters", "verify": "the verification", "sample": "the after-sample",
          "merged": "the merged export", "gguf": "the GGUF export", "report": "the report"}


@dataclass(frozen=True)
class RunState:
    """How the training of a loaded model ended (`loaded.trained`): what exports and chat check first."""
    status: str
    step: int
    total: int | None
    folder: str = ""

    @property
    def finished(self) -> bool:
        return self.status == FINISHED


def require_finished(state: RunState | None, what: str, allow_unfinished: bool = False) -> None:
    """Refuse to `what` (export, chat with) a model whose run (`state`, e.g. `loaded.trained`; None: not trained
    here) did not finish, unless the caller chose to."""
    if state is None or state.finished or allow_unfinished:
        return
    raise UnfinishedRunError(f"This model trained {state.step} of {state.total or '?'} steps ({state.status}), so "
                             f"{what} would give a partial model. Finish the run first (resume=True, CLI: --resume), "
                             f"or pass allow_unfinished=True (CLI: --allow-unfinished) to {what} it as it is.")


def describe(marker: dict | None, folder: str | Path | None = None) -> str:
    """A run's state in words: 'finished (60/60 steps)', 'interrupted at step 4/15', 'failed while loading'."""
    if not marker:
        return "no nbkit run"
    status, step, total = marker.get("status", "?"), marker.get("step"), marker.get("total")
    steps = f"{step}/{total}" if step is not None and total else None
    if status == FAILED:
        return f"failed while {marker.get('phase', 'training')}" + (f" at step {steps}" if steps else "")
    if status in (*UNFINISHED, DIVERGED):
        return f"{status} at step {steps}" if steps else status
    if status in ACTIVE and not alive(marker, folder):
        return f"ended without finishing{f' at step {steps}' if steps else ''} (its process is gone)"
    if status != FINISHED:
        return status
    exported = sorted(marker.get("exported", {}))
    done = "; exported: " + ", ".join(exported) if exported else ""
    stale = marker.get("stale_exports") or {}
    if stale:
        done += "; stale exports: " + ", ".join(f"{k} (step {v.get('step')})" for k, v in sorted(stale.items()))
    text = f"finished ({steps} steps{done})" if steps else f"finished{done}"
    return text + missing(marker)


def missing(marker: dict) -> str:
    """'; the after-sample failed: …; not done: the merged export' for a run whose finishing was cut short."""
    todo = marker.get("todo") or []
    if not todo:
        return ""
    why = f"; {marker['cut_short']}" if marker.get("cut_short") else ""
    return f"{why}; not done: {', '.join(STAGES.get(t, t) for t in todo)}"


def pending_exports(marker: dict | None) -> list[str]:
    """The exports a run was asked for that are not made yet (its finishing was cut short)."""
    return [t for t in (marker or {}).get("todo") or [] if t in EXPORTS]


def finish_command(folder: str | Path, marker: dict | None) -> str:
    """The command that finishes what a saved run is missing: its exports (`nbkit export`), or its steps."""
    if (marker or {}).get("status") in UNFINISHED:
        return "nbkit train --config RUN.yaml --resume (Python: resume=True)"
    flags = "".join({"merged": " --merged", "gguf": " --gguf q8_0"}[k] for k in pending_exports(marker))
    return f"nbkit export {folder}{flags}"



def choices(folder: Path, marker: dict) -> str:
    from ..planning.config import is_auto_output_dir

    # a folder nbkit named: the user left output_dir unset already, so the fresh folder comes from a new config
    fresh = ("or run the cell that builds the config again for a fresh folder" if is_auto_output_dir(str(folder))
             else "or leave output_dir unset for a fresh folder per run")
    if marker.get("status") == FINISHED:
        return (f"It is final: export it with nbkit export {folder} (Python: nbkit.exporting.export.from_run), train longer "
                f"with resume=True and max_steps above {marker.get('step', '?')}, replace it with overwrite=True "
                f"(CLI: --overwrite), {fresh}.")
    return f"Continue it with resume=True (CLI: --resume), replace it with overwrite=True (--overwrite), {fresh}."



def alive(marker: dict, folder: str | Path | None = None) -> bool:
    """Whether a live process uses the run folder now: it holds the folder's lock (never a recycled pid)."""
    folder = folder or (marker.get("config") or {}).get("output_dir")
    return bool(folder) and ownership.owner(folder) is not None

