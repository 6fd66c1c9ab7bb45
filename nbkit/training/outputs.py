"""Output folders that never lose work: one folder per run, marked as nbkit's, written atomically.

What a run folder's marker says of the run's life (and who may claim the folder) is nbkit.training.runs'.

nbkit only ever replaces or deletes what it wrote itself: the entries a run folder's marker (`nbkit_run.json`)
lists, the files each export wrote inside its folder (listed in the marker, and in the adapters' own
nbkit_run.json), and checkpoints that carry nbkit's completion marker; a file of the user's beside them stays.
Everything is written under a temporary name and renamed into place when complete, so a crash or a full disk
leaves either the old file or the new one.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ExportError
from ..planning.hardware import disk_free_gib as free_gib  # noqa: F401  (checkpoints and the workflow ask here)

RUN_MARKER = "nbkit_run.json"
CHECKPOINT_MARKER = "nbkit_checkpoint.json"
# names a run writes at the top of its folder, besides its marker
RUN_ENTRIES = ("lora_adapters", "merged_16bit", "gguf", "nbkit_report.json")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_STAGING_PREFIX = ".nbkit-tmp-"


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_STAGING_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_marker(folder: str | Path) -> dict | None:
    try:
        return json.loads((Path(folder) / RUN_MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_run_folder(folder: str | Path) -> bool:
    return read_marker(folder) is not None


def checkpoints(folder: str | Path) -> list[Path]:
    """The checkpoint-N folders in `folder`, oldest step first (complete or not)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found)]


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / CHECKPOINT_MARKER).exists()


def newest_checkpoint(folder: str | Path) -> tuple[Path | None, list[Path]]:
    """(newest complete checkpoint or None, incomplete ones newer than it that were skipped)."""
    skipped = []
    for ckpt in reversed(checkpoints(folder)):
        if is_complete(ckpt):
            return ckpt, skipped
        skipped.append(ckpt)
    return None, skipped


def foreign_entries(folder: Path) -> list[str]:
    """Names nbkit would write that are already there but were not written by an nbkit run."""
    clash = [n for n in RUN_ENTRIES if (folder / n).exists()]
    clash += [p.name for p in checkpoints(folder)]
    return clash


def owned_files(final: Path) -> list[str] | None:
    """The files nbkit wrote in export folder `final`: from its own nbkit_run.json (the adapters), else from the
    run marker beside it (each export's `files`). [] when nbkit wrote none of it; None for a folder an older nbkit
    wrote without a list (then only the names a new export writes are taken as nbkit's)."""
    inner = read_marker(final)
    if inner is not None and "files" in inner:
        return [*inner["files"], RUN_MARKER]
    run = read_marker(final.parent) or {}
    for entry in [*(run.get("exported") or {}).values(), *(run.get("stale_exports") or {}).values()]:
        if entry.get("path") == final.name and "files" in entry:
            return list(entry["files"])
    legacy = inner is not None or (final / CHECKPOINT_MARKER).exists() or final.name in run.get("written", [])
    return None if legacy else []


def remove_owned(target: Path) -> bool:
    """Remove what nbkit wrote at `target` (a file, or the files it wrote in a folder, then the folder if that
    leaves it empty). A folder an older nbkit wrote without a list of its files is left as it is (True): the
    next export there replaces only the names it writes."""
    if not target.is_dir():
        target.unlink(missing_ok=True)
        return False
    files = owned_files(target)
    if files is None:
        return True
    for name in files or []:
        entry = target / name
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
    if files and not any(target.iterdir()):
        target.rmdir()
    return False


def remove_run_entries(folder: Path, marker: dict) -> list[str]:
    """Delete an earlier run's own files (what its marker lists, and checkpoints carrying nbkit's completion
    marker) and its marker: nothing else in the folder is touched, not even a file of the user's put inside an
    export's folder. Returns the folders kept because an older nbkit listed no files for them (still nbkit's)."""
    kept = [name for name in marker.get("written", []) if remove_owned(folder / name)]
    for ckpt in checkpoints(folder):
        if is_complete(ckpt):
            shutil.rmtree(ckpt)
    (folder / RUN_MARKER).unlink()
    return kept


def update_marker(folder: str | Path, written: str | None = None, **fields: Any) -> None:
    folder = Path(folder)
    marker = read_marker(folder) or {"written": []}
    marker.update(fields)
    if written and written not in marker["written"]:
        marker["written"].append(written)
    write_text_atomic(folder / RUN_MARKER, json.dumps(marker, indent=2, default=str))


def saved_config(folder: str | Path):
    """The RunConfig a run folder was started with (to resume it exactly)."""
    from ..planning.config import RunConfig

    marker = read_marker(folder)
    if not marker or not marker.get("config"):
        raise ConfigError(f"{folder} holds no nbkit run, so it has no saved settings.")
    return RunConfig.from_dict(marker["config"])


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(prefix=_STAGING_PREFIX, dir=folder)
        probe.close()
    except OSError as exc:
        raise ConfigError(f"Cannot write to output_dir={str(folder)!r}: {exc.strerror or exc}. Pick a folder you "
                          "can write to.") from None


@contextmanager
def atomic_dir(final: str | Path):
    """Yield a temporary sibling folder to write into; on success its entries take their places in `final`. A new
    `final` appears in one rename. In an existing one, only nbkit's own earlier files (`owned_files`) are replaced
    or removed, each by a rename; the user's files stay, and a name the new files share with one of the user's is
    refused, in one line, before anything changes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX + final.name + "-", dir=final.parent))
    try:
        yield tmp
        if not final.exists():
            os.replace(tmp, final)
            return
        if not final.is_dir():
            raise ExportError(f"{final} is a file, not a folder, and nbkit did not write it; nothing was replaced. "
                              "Move it away or save elsewhere.")
        new = sorted(p.name for p in tmp.iterdir())
        owned = owned_files(final)
        ours = set(new if owned is None else owned)
        clash = [n for n in new if (final / n).exists() and n not in ours]
        if clash:
            raise ExportError(f"{final / clash[0]} is not nbkit's (nbkit did not write it), and this export writes "
                              f"a file of that name; nothing was replaced. Move or rename it, then export again.")
        _swap_in(tmp, final, new, sorted(n for n in ours if (final / n).exists() or (final / n).is_symlink()))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, final: Path, new: list[str], old: list[str]) -> None:
    """nbkit's old entries in `final` set aside, the new ones renamed in, then the old ones deleted; put back as
    they were if a rename fails half-way."""
    aside = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX + "old-" + final.name + "-", dir=final.parent))
    moved, placed = [], []
    try:
        for name in old:
            os.replace(final / name, aside / name)
            moved.append(name)
        for name in new:
            os.replace(tmp / name, final / name)
            placed.append(name)
    except BaseException:
        for name in placed:
            shutil.rmtree(final / name, ignore_errors=True) if (final / name).is_dir() else \
                (final / name).unlink(missing_ok=True)
        for name in moved:
            os.replace(aside / name, final / name)
        raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def rescue_dir(name: str) -> Path:
    """Where a save goes when its own folder cannot take it: the user cache, else the system temp folder."""
    for root in (Path(os.environ.get("NBKIT_CACHE", Path.home() / ".cache" / "nbkit")) / "rescued",
                 Path(tempfile.gettempdir()) / "nbkit-rescued"):
        try:
            root.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=root))
        except OSError:
            continue
    raise ExportError("No folder could be created for a rescue copy (cache and temp folders are not writable).")
