"""A run folder's life, recorded in its marker (nbkit_run.json), and what the next call may do with it.

    preparing ─► training ─► stopped (asked) | interrupted | failed (phase) | diverged | finished ─► exported

The folder is only *claimed* when training starts; checks (`preflight`) write nothing. A run that ended before
its first complete checkpoint, having written nothing, is retried as it is. A finished run is final: resuming it
changes nothing unless a larger `max_steps` asks to train longer, which continues from its last checkpoint and is
recorded. A folder that a live process (or a run of this kernel) is using is never taken over: the process
holds the folder's OS lock (nbkit.training.ownership), which ends with it, so a recycled process id cannot fool the check.
What happens after the last step (the adapters saved first, then checks and exports) is nbkit.exporting.finishing's.
"""
from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import outputs, ownership
from .run_states import (ACTIVE, DIVERGED, EXPORTS, FAILED, FINISHED, INTERRUPTED, PREPARING, STAGES,  # noqa: F401
                         STOPPED, TRAINING, UNFINISHED, RunState, alive, choices, describe, finish_command,
                         missing, pending_exports, require_finished)
from .same_run import RESUMABLE_CHANGES, check_same_run  # noqa: F401  (nbkit.training.runs' names for them)
from .same_run import changed_data_entry, check_same_data, data_fingerprint
from ..errors import ConfigError, RunFinished


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


def plan(config, resume: bool = False, overwrite: bool = False, accept_changed_data: bool = False) -> Claim:
    """Decide what training into config.output_dir may do, or raise with what to do instead. Writes nothing.
    `accept_changed_data` lets a resumed run continue on data that changed since it trained (else refused)."""
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
        raise ConfigError(f"output_dir={str(folder)!r} already holds an nbkit run ({describe(marker, folder)}, "
                          f"started {marker.get('started', '?')}). {choices(folder, marker)}")
    check_same_run(marker.get("config", {}), config, folder)
    if not accept_changed_data:
        check_same_data(marker, config, folder)
    if marker.get("status") == FINISHED:
        done = marker.get("step") or 0
        if config.max_steps <= done and pending_exports(marker):
            err = RunFinished(f"The run in {folder} finished training and its adapters are saved, but it is "
                              f"missing what was asked after training ({describe(marker, folder)}); nothing was "
                              f"trained. Finish it with: {finish_command(folder, marker)}")
            err.pending = pending_exports(marker)
            raise err
        if config.max_steps <= done:
            raise RunFinished(f"The run in {folder} already {describe(marker, folder)}; nothing was changed. "
                              f"To train longer, resume with max_steps above {done}; to export it: "
                              f"nbkit export {folder} --merged (Python: nbkit.exporting.export.from_run('{folder}')).")
        if outputs.newest_checkpoint(folder)[0] is None:
            raise ConfigError(f"The run in {folder} finished at step {done} without a checkpoint (save_steps=0), "
                              "so it cannot continue: start a new run with more steps instead.")
        return Claim(folder, "extend", marker)
    return Claim(folder, "resume", marker)


def never_trained(folder: Path, marker: dict) -> bool:
    """A run that wrote nothing but its marker (no checkpoint, none of the names a run writes): retrying it in
    place loses nothing and touches nothing else."""
    return marker.get("status") != FINISHED and not marker.get("written") and not outputs.foreign_entries(folder)


def in_use(folder: Path) -> str | None:
    """Why `folder` cannot be taken now (a live process or another run of this kernel uses it), or None."""
    if ownership.held_by_this_thread(folder):
        return None  # this call's own run, further along (the workflow claimed it, training re-checks)
    owner = ownership.owner(folder)
    if owner is None:
        return None
    if owner.get("here"):
        return (f"A run of this kernel is using {folder} now (the launcher's?). Stop it first, or pick another "
                "output_dir.")
    return (f"{ownership.describe_owner(owner).capitalize()} is using {folder} now (it holds the run's lock). Wait "
            "for it to end or stop it, or pick another output_dir.")


def _refuse_if_in_use(folder: Path, marker: dict) -> None:
    why = in_use(folder)
    if why:
        raise ConfigError(why)


def _take(folder: Path) -> None:
    """This process's hold on the folder (its OS lock), or the refusal naming who holds it."""
    outputs.check_writable(folder)
    if not ownership.acquire(folder):
        _refuse_if_in_use(folder, {})
        raise ConfigError(f"Another process took {folder} just now. Pick another output_dir.")


@contextmanager
def claimed(config, resume: bool = False, overwrite: bool = False, record: bool = True,
            accept_changed_data: bool = False):
    """The folder held by this run from before loading to its very end (exports included), `begin` done inside;
    released however the run ends. `record=False` (a rank that does not write) holds nothing."""
    if not record:
        yield None
        return
    claim = begin(config, resume=resume, overwrite=overwrite, accept_changed_data=accept_changed_data)
    try:
        yield claim
    finally:
        ownership.release(claim.folder)


def begin(config, resume: bool = False, overwrite: bool = False, accept_changed_data: bool = False) -> Claim:
    """Before loading: the folder is held (nbkit.training.ownership; release with `release`), and a new (or retried) run
    folder says "preparing", so that a failure can say in which phase. A run to resume or replace is left as it
    is until training starts, except an accepted change of its data, which is recorded now."""
    claim = plan(config, resume=resume, overwrite=overwrite, accept_changed_data=accept_changed_data)
    _take(claim.folder)
    try:
        claim = plan(config, resume=resume, overwrite=overwrite, accept_changed_data=accept_changed_data)
        if claim.mode in ("new", "retry"):
            _write(claim.folder, status=PREPARING, config=config.to_dict(), started=_now(), phase=None, error=None,
                   step=None, total=None)
        elif claim.continues and accept_changed_data:
            accept_data_change(claim.folder, config)
    except BaseException:
        ownership.release(claim.folder)
        raise
    return claim


def release(folder: str | Path) -> None:
    ownership.release(folder)


@contextmanager
def holding(folder: str | Path):
    """Hold a run folder while working in it without training (an export): refused while a live process uses it."""
    folder = Path(folder)
    _refuse_if_in_use(folder, {})
    _take(folder)
    try:
        yield folder
    finally:
        ownership.release(folder)


def accept_data_change(folder: str | Path, config) -> None:
    """Record that the run in `folder` continues on its data as it is now (the explicit choice that lets a resume
    go on after the data file changed); the folder keeps the history (`data_changes`)."""
    change = changed_data_entry(outputs.read_marker(folder) or {}, config)
    if change:
        print(f"nbkit: the data changed since this run trained on it; continuing on it as it is now (recorded in "
              f"{Path(folder) / outputs.RUN_MARKER}).")
        _write(folder, **change)


def start_training(config, resume: bool = False, overwrite: bool = False) -> Claim:
    """Claim the folder as training starts (held until `end`): the decision of plan(), carried out."""
    claim = plan(config, resume=resume, overwrite=overwrite)
    folder = claim.folder
    _take(folder)
    try:
        _start(claim, config)
    except BaseException:
        ownership.release(folder)
        raise
    return claim


def _start(claim: Claim, config) -> None:
    folder, marker = claim.folder, claim.marker or {}
    kept = outputs.remove_run_entries(folder, marker) if claim.mode == "overwrite" else []
    fields = dict(status=TRAINING, config=config.to_dict(), phase=None, error=None, total=config.max_steps or None,
                  todo=None, cut_short=None)
    if not claim.continues:
        fields.update(started=_now(), step=0, exported={}, stale_exports={}, data=data_fingerprint(config))
    if claim.mode == "extend":
        fields["extended"] = marker.get("extended", []) + [{"from_step": marker.get("step"),
                                                            "to_step": config.max_steps, "at": _now()}]
    if claim.continues and marker.get("exported"):
        # what was exported holds an earlier step: kept on disk (nbkit's files), no longer the run's export
        fields.update(exported={}, stale_exports={**marker.get("stale_exports", {}), **marker["exported"]})
        print(f"nbkit: the exports in {folder} ({', '.join(sorted(marker['exported']))}) hold step "
              f"{marker.get('step')}; they are marked stale, and this run's exports will replace them.")
    _write(folder, **fields)
    for name in kept:  # an older nbkit's export folders, still nbkit's to replace file by file
        _write(folder, written=name)


def end(folder: str | Path, status: str, step: int | None = None, total: int | None = None, **fields) -> None:
    """Record how the run ended (finished, stopped, interrupted, failed in a phase, diverged)."""
    folder = Path(folder)
    try:
        if outputs.is_run_folder(folder):
            _write(folder, status=status, **({"step": step} if step is not None else {}),
                   **({"total": total} if total else {}), ended=_now(), **fields)
    finally:
        ownership.release(folder)


def failed(folder: str | Path, phase: str, error: BaseException) -> None:
    """A run that failed: which phase and why, in one line (a retry reads it)."""
    marker = outputs.read_marker(folder)
    if marker is not None and marker.get("status") in ACTIVE:
        end(folder, FAILED, phase=phase, error=one_line(error))
    elif phase == "training":  # train.run's hold, whatever the marker says
        ownership.release(folder)


def one_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300]}" if text else type(error).__name__


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


def exported(folder: str | Path, kind: str, path: Path, step: int | None, files: list[str] | None = None) -> None:
    """Note an export (lora, merged, gguf), the step it holds and the files it wrote: only those are ever replaced
    later. A stale export of that kind is superseded; a pending one is done."""
    marker = outputs.read_marker(folder)
    if marker is None:
        return
    done = dict(marker.get("exported", {}))
    done[kind] = {"path": path.name, "step": step, "at": _now(), "files": files or []}
    stale = {k: v for k, v in (marker.get("stale_exports") or {}).items() if v.get("path") != path.name}
    todo = [t for t in marker.get("todo") or [] if t != kind]
    _write(folder, written=path.name, exported=done, stale_exports=stale, todo=todo or None,
           cut_short=marker.get("cut_short") if todo else None)


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
