"""A run folder's life, recorded in its marker (nbkit_run.json), and what the next call may do with it.

    preparing ─► training ─► stopped (asked) | interrupted | failed (phase) | diverged | finished ─► exported

The folder is only *claimed* when training starts; checks (`preflight`) write nothing. A run that ended before
its first complete checkpoint, having written nothing, is retried as it is. A finished run is final: resuming it
changes nothing unless a larger `max_steps` asks to train longer, which continues from its last checkpoint and is
recorded. A folder that a live process (or a run of this kernel) is training into is never taken over.
"""
from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import outputs
from ..errors import ConfigError, RunFinished, UnfinishedRunError

PREPARING, TRAINING, STOPPED, INTERRUPTED = "preparing", "training", "stopped", "interrupted"
FAILED, DIVERGED, FINISHED = "failed", "diverged", "finished"
UNFINISHED = (STOPPED, INTERRUPTED)  # ended early on purpose, with a checkpoint to resume from
# what may differ between a run and its resumption without changing what is trained
RESUMABLE_CHANGES = {"output_dir", "save_steps", "save_total_limit", "save_minutes", "backend", "batch_size",
                     "grad_accum", "extra", "max_steps", "report_to", "hub_checkpoints"}

_training_here: set[str] = set()  # folders a run of this process is training into now (a launcher's thread)


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


@dataclass(frozen=True)
class Claim:
    """What training into `folder` will do: start "new", "retry" a run that never trained, "resume" one that
    stopped, "extend" a finished one to more steps, or "overwrite" an earlier run's own files."""
    folder: Path
    mode: str
    marker: dict | None = None

    @property
    def continues(self) -> bool:
        return self.mode in ("resume", "extend")


def describe(marker: dict | None) -> str:
    """A run's state in words: 'finished (60/60 steps)', 'interrupted at step 4/15', 'failed while loading'."""
    if not marker:
        return "no nbkit run"
    status, step, total = marker.get("status", "?"), marker.get("step"), marker.get("total")
    steps = f"{step}/{total}" if step is not None and total else None
    if status == FAILED:
        return f"failed while {marker.get('phase', 'training')}" + (f" at step {steps}" if steps else "")
    if status in (*UNFINISHED, DIVERGED):
        return f"{status} at step {steps}" if steps else status
    if status == FINISHED:
        exported = sorted(marker.get("exported", {}))
        done = "; exported: " + ", ".join(exported) if exported else ""
        return f"finished ({steps} steps{done})" if steps else f"finished{done}"
    if status in ("running", TRAINING) and not _alive(marker):
        return f"ended without finishing{f' at step {steps}' if steps else ''} (its process is gone)"
    return status


def plan(config, resume: bool = False, overwrite: bool = False) -> Claim:
    """Decide what training into config.output_dir may do, or raise with what to do instead. Writes nothing."""
    folder = Path(config.output_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output_dir={str(folder)!r} is a file, not a folder. Pick a folder name, or leave "
                          "output_dir unset for a fresh folder per run.")
    marker = outputs.read_marker(folder)
    if marker is None:
        clash = outputs.foreign_entries(folder) if folder.exists() else []
        if clash:
            raise ConfigError(f"output_dir={str(folder)!r} already holds {clash}, which nbkit did not write, so it "
                              "will not write there. Pick another output_dir (or leave it unset).")
        if resume:
            raise ConfigError(f"Nothing to resume in {str(folder)!r}: no nbkit run was started there. Run without "
                              "resume to start one.")
        return Claim(folder, "new")
    _refuse_if_in_use(folder, marker)
    if never_trained(folder, marker):  # a failed or refused start: nothing of it to keep or resume
        return Claim(folder, "retry", marker)
    if overwrite:
        return Claim(folder, "overwrite", marker)
    if not resume:
        raise ConfigError(f"output_dir={str(folder)!r} already holds an nbkit run ({describe(marker)}, started "
                          f"{marker.get('started', '?')}). {_choices(folder, marker)}")
    check_same_run(marker.get("config", {}), config, folder)
    if marker.get("status") == FINISHED:
        done = marker.get("step") or 0
        if config.max_steps <= done:
            raise RunFinished(f"The run in {folder} already {describe(marker)}; nothing was changed. "
                              f"To train longer, resume with max_steps above {done}; to export it: "
                              f"nbkit export {folder} --merged (Python: nbkit.export.from_run('{folder}')).")
        if outputs.newest_checkpoint(folder)[0] is None:
            raise ConfigError(f"The run in {folder} finished at step {done} without a checkpoint (save_steps=0), "
                              "so it cannot continue: start a new run with more steps instead.")
        return Claim(folder, "extend", marker)
    return Claim(folder, "resume", marker)


def never_trained(folder: Path, marker: dict) -> bool:
    """A run that wrote nothing but its marker (no checkpoint, none of the names a run writes): retrying it in
    place loses nothing and touches nothing else."""
    return marker.get("status") != FINISHED and not marker.get("written") and not outputs.foreign_entries(folder)


def _choices(folder: Path, marker: dict) -> str:
    from ..planning.config import is_auto_output_dir

    # a folder nbkit named: the user left output_dir unset already, so the fresh folder comes from a new config
    fresh = ("or run the cell that builds the config again for a fresh folder" if is_auto_output_dir(str(folder))
             else "or leave output_dir unset for a fresh folder per run")
    if marker.get("status") == FINISHED:
        return (f"It is final: export it with nbkit export {folder} (Python: nbkit.export.from_run), train longer "
                f"with resume=True and max_steps above {marker.get('step', '?')}, replace it with overwrite=True "
                f"(CLI: --overwrite), {fresh}.")
    return f"Continue it with resume=True (CLI: --resume), replace it with overwrite=True (--overwrite), {fresh}."


def _alive(marker: dict) -> bool:
    """Whether the process that wrote `marker` still runs (only knowable on the same machine)."""
    pid = marker.get("pid")
    if not pid or marker.get("host") != socket.gethostname():
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refuse_if_in_use(folder: Path, marker: dict) -> None:
    if marker.get("status") not in ("running", PREPARING, TRAINING):
        return
    if str(folder.resolve()) in _training_here:
        raise ConfigError(f"A run of this kernel is training into {folder} now (the launcher's?). Stop it first, "
                          "or pick another output_dir.")
    if _alive(marker) and marker.get("pid") != os.getpid():
        raise ConfigError(f"Process {marker['pid']} is {marker.get('status')} in {folder} now. Wait for it or stop "
                          "it, or pick another output_dir.")


def check_same_run(saved: dict, config, folder: Path) -> None:
    given = config.to_dict()
    changed = sorted(k for k in given if k not in RESUMABLE_CHANGES and k in saved and saved[k] != given[k])
    old_eff = saved.get("batch_size", 0) * saved.get("grad_accum", 0)
    if old_eff and old_eff != config.effective_batch:
        changed.append(f"effective batch ({old_eff} → {config.effective_batch})")
    if changed:
        detail = ", ".join(f"{k}: {saved[k]!r} → {given[k]!r}" if k in saved else k for k in changed)
        raise ConfigError(f"Cannot resume the run in {str(folder)!r} with different settings ({detail}): the "
                          "result would mix two runs. Resume with the saved settings (nbkit.outputs.saved_config("
                          f"'{folder}') returns them), or start a new run in another folder.")


def begin(config, resume: bool = False, overwrite: bool = False) -> Claim:
    """Before loading: a new (or retried) run folder says "preparing", so that a failure can say in which phase.
    A run to resume or replace is left as it is until training starts."""
    claim = plan(config, resume=resume, overwrite=overwrite)
    if claim.mode in ("new", "retry"):
        outputs.check_writable(claim.folder)
        _write(claim.folder, status=PREPARING, config=config.to_dict(), started=_now(), phase=None, error=None,
               step=None, total=None)
    return claim


def start_training(config, resume: bool = False, overwrite: bool = False) -> Claim:
    """Claim the folder as training starts: the decision of plan(), carried out."""
    claim = plan(config, resume=resume, overwrite=overwrite)
    folder = claim.folder
    if claim.mode == "overwrite":
        outputs.remove_run_entries(folder, claim.marker)
    outputs.check_writable(folder)
    fields = dict(status=TRAINING, config=config.to_dict(), phase=None, error=None, total=config.max_steps or None)
    if not claim.continues:
        fields.update(started=_now(), step=0, exported={})
    if claim.mode == "extend":
        history = (claim.marker or {}).get("extended", [])
        fields["extended"] = history + [{"from_step": claim.marker.get("step"), "to_step": config.max_steps,
                                         "at": _now()}]
        stale = sorted((claim.marker or {}).get("exported", {}))
        if stale:
            print(f"nbkit: the exports in {folder} ({', '.join(stale)}) are from step {claim.marker.get('step')}; "
                  "export again after this run to replace them.")
    _write(folder, **fields)
    _training_here.add(str(folder.resolve()))
    return claim


def end(folder: str | Path, status: str, step: int | None = None, total: int | None = None, **fields) -> None:
    """Record how the run ended (finished, stopped, interrupted, failed in a phase, diverged)."""
    folder = Path(folder)
    _training_here.discard(str(folder.resolve()))
    if outputs.is_run_folder(folder):
        _write(folder, status=status, **({"step": step} if step is not None else {}),
               **({"total": total} if total else {}), ended=_now(), **fields)


def failed(folder: str | Path, phase: str, error: BaseException) -> None:
    """A run that failed: which phase and why, in one line (a retry reads it)."""
    marker = outputs.read_marker(folder)
    if marker is not None and marker.get("status") in ("running", PREPARING, TRAINING):
        end(folder, FAILED, phase=phase, error=f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
            if str(error) else type(error).__name__)


@contextmanager
def phase(folder: str | Path, name: str, record: bool = True):
    """Inside, a failure is recorded as "failed while <name>" (an interrupt as "interrupted"), then re-raised."""
    try:
        yield
    except KeyboardInterrupt:
        if record:
            end(folder, INTERRUPTED, phase=name)
        raise
    except Exception as exc:
        if record:
            failed(folder, name, exc)
        raise


def note(folder: str | Path, written: str | None = None, **fields) -> None:
    """Add facts to a run folder's marker (what was written, export failures)."""
    if outputs.is_run_folder(folder):
        _write(folder, written=written, **fields)


def exported(folder: str | Path, kind: str, path: Path, step: int | None) -> None:
    """Note an export (lora, merged, gguf) and the step it holds; only what a run wrote may be replaced later."""
    marker = outputs.read_marker(folder)
    if marker is None:
        return
    done = dict(marker.get("exported", {}))
    done[kind] = {"path": path.name, "step": step, "at": _now()}
    _write(folder, written=path.name, exported=done)


def _write(folder, written: str | None = None, **fields) -> None:
    try:
        outputs.update_marker(folder, written=written, pid=os.getpid(), host=socket.gethostname(), **fields)
    except OSError as exc:  # a full disk must not hide the error that says what happened to the run
        if fields.get("status") in (PREPARING, TRAINING):
            raise
        print(f"nbkit: warning: could not record the run's state in {folder} ({exc.strerror or exc}); the folder's "
              f"nbkit_run.json may say it is still running.")


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
