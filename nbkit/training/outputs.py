"""Output folders that never lose work: one folder per run, marked as nbkit's, written atomically.

What a run folder's marker says of the run's life (and who may claim the folder) is nbkit.training.runs'.

nbkit only ever replaces or deletes what it wrote itself: the entries a run folder's marker (`nbkit_run.json`)
lists, and checkpoints that carry nbkit's completion marker. Everything is written under a temporary name and
renamed into place when complete, so a crash or a full disk leaves either the old file or the new one.
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


def remove_run_entries(folder: Path, marker: dict) -> None:
    """Delete an earlier run's own files (what its marker lists, and checkpoints carrying nbkit's completion
    marker) and its marker: nothing else in the folder is touched."""
    for name in marker.get("written", []):
        target = folder / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    for ckpt in checkpoints(folder):
        if is_complete(ckpt):
            shutil.rmtree(ckpt)
    (folder / RUN_MARKER).unlink()


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
    """Yield a temporary sibling folder to write into; on success it replaces `final` in one rename. A previous
    `final` is replaced only if nbkit wrote it (it holds a file nbkit writes, e.g. its nbkit_run.json)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX + final.name + "-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            ours = ((final / RUN_MARKER).exists() or (final / CHECKPOINT_MARKER).exists()
                    or final.name in (read_marker(final.parent) or {}).get("written", []))
            if not ours:
                raise ExportError(f"{final} already exists and nbkit did not write it; nothing was replaced. "
                                  f"Move it away or save elsewhere.")
            old = final.with_name(f"{_STAGING_PREFIX}old-{final.name}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
