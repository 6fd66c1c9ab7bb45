"""Resume continues the run that is in the folder, or says why it cannot: the same settings, the same data.

A run's data fingerprint (sha256 of the data file(s) as they were read) is recorded in its folder when training
starts. Resuming with a data file edited in place would train the rest of the run on other rows than the first
part, and the result would belong to neither; it is refused with the fix, unless the change is accepted
explicitly (`accept_changed_data`), which the folder records.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

from ..errors import ConfigError

# what may differ between a run and its resumption without changing what is trained
RESUMABLE_CHANGES = {"output_dir", "save_steps", "save_total_limit", "save_minutes", "backend", "batch_size",
                     "grad_accum", "extra", "max_steps", "report_to", "hub_checkpoints"}

_cache: dict[tuple, str] = {}  # (path, inode, size, mtime, ctime) of a file -> its sha256: one read per change


def check_same_run(saved: dict, config, folder: Path) -> None:
    given = config.to_dict()
    changed = sorted(k for k in given if k not in RESUMABLE_CHANGES and k in saved and saved[k] != given[k])
    old_eff = saved.get("batch_size", 0) * saved.get("grad_accum", 0)
    if old_eff and old_eff != config.effective_batch:
        changed.append(f"effective batch ({old_eff} → {config.effective_batch})")
    if changed:
        detail = ", ".join(f"{k}: {saved[k]!r} → {given[k]!r}" if k in saved else k for k in changed)
        raise ConfigError(f"Cannot resume the run in {str(folder)!r} with different settings ({detail}): the "
                          "result would mix two runs. Resume with the saved settings (nbkit.training.outputs.saved_config("
                          f"'{folder}') returns them), or start a new run in another folder.")


def data_files(dataset: str) -> list[Path] | None:
    """The local file(s) a config's `dataset` reads, or None for a Hub data set (not fingerprinted here)."""
    from ..planning.config import DEFAULT_DATASET
    from ..resources import DEFAULT_DATA_PATH

    path = DEFAULT_DATA_PATH if dataset == DEFAULT_DATASET else Path(str(dataset)).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return None


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key in _cache:
        return _cache[key]
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    # a file changed within the last seconds may change again under the same (coarse) timestamp: not cached
    if time.time() - stat.st_mtime > 2:
        _cache[key] = h.hexdigest()
    return h.hexdigest()


def data_fingerprint(config) -> dict | None:
    """{"sha256", "files", "bytes"} of the data the config trains on, as it is on disk now; None for a Hub id."""
    files = data_files(config.dataset)
    if not files:
        return None
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        h.update(_sha256(path).encode())
    return {"sha256": h.hexdigest(), "files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def check_same_data(marker: dict, config, folder: Path) -> None:
    """Refuse to continue a run on data that changed since it trained (unless the change was accepted)."""
    then, now = marker.get("data"), data_fingerprint(config)
    if not then or not now or then.get("sha256") == now["sha256"]:
        return  # a run from before fingerprints, or a Hub data set: nothing to compare
    raise ConfigError(
        f"The data ({config.dataset}) changed since the run in {folder} trained on it (sha256 {then['sha256'][:12]} "
        f"→ {now['sha256'][:12]}, {then.get('bytes', '?')} → {now['bytes']} bytes): resuming would train the rest "
        "of the run on other rows. Restore the data as it was, start a new run in another folder, or accept the "
        "change for the rest of this run with accept_changed_data=True (CLI: --accept-changed-data).")


def changed_data_entry(marker: dict, config) -> dict | None:
    """The marker fields that record an accepted data change (None when nothing changed)."""
    then, now = marker.get("data"), data_fingerprint(config)
    if not now or (then and then.get("sha256") == now["sha256"]):
        return None
    history = list(marker.get("data_changes", []))
    history.append({"at_step": marker.get("step"), "from": (then or {}).get("sha256"), "to": now["sha256"],
                    "at": time.strftime("%Y-%m-%d %H:%M:%S")})
    return {"data": now, "data_changes": history}
