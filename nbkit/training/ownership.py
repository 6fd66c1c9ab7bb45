"""Who owns a run folder now: an OS file lock, held by the process that trains (or exports) into it.

A process id alone can lie: once the training process dies, its number may be given to an unrelated program, and
a folder would look taken for good (the advice "stop process N" would then kill someone else's program). The
lock cannot lie: the operating system releases it the moment its process ends, however it ends (a crash, kill -9,
a dead kernel), and it works across PID namespaces (containers) sharing the folder. The lock file holds the
owner's pid, host and start time, written by the owner itself, so the advice names the right process.

Where the OS has no `flock` (Windows), the owner is known by its pid and that process's start time (psutil).
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = ".nbkit_run.lock"

_held: dict[str, tuple[int, int]] = {}  # resolved folder -> (file descriptor, holds): this process's locks
_holder_thread: dict[str, int] = {}  # resolved folder -> the thread that took the lock (a launcher's, the cell's)


def _key(folder: str | Path) -> str:
    return str(Path(folder).expanduser().resolve())


def held_here(folder: str | Path) -> bool:
    """Whether this process holds the folder's lock (a run of this kernel is using it)."""
    return _key(folder) in _held


def held_by_this_thread(folder: str | Path) -> bool:
    """Whether the calling thread took the folder's lock: its own run, further along (workflow -> train)."""
    return _holder_thread.get(_key(folder)) == threading.get_ident()


def acquire(folder: str | Path) -> bool:
    """Take the folder's lock for this process (again, if it holds it already: each acquire needs a release).
    False when another live process holds it."""
    key = _key(folder)
    if key in _held:
        fd, count = _held[key]
        _held[key] = (fd, count + 1)
        return True
    path = Path(key) / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:
            if owner_alive(_read(fd)):
                os.close(fd)
                return False
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        # the file may have been removed (its owner released it) between our open and our lock: retry on the new one
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "process_started": _started(os.getpid()),
          "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    _held[key] = (fd, 1)
    _holder_thread[key] = threading.get_ident()
    return True


def release(folder: str | Path) -> None:
    """Give back one acquire; the last one removes the lock file and unlocks (the OS does both if the process dies,
    except removing the file, which then stays, unlocked, and is reused)."""
    key = _key(folder)
    if key not in _held:
        return
    fd, count = _held[key]
    if count > 1:
        _held[key] = (fd, count - 1)
        return
    del _held[key]
    _holder_thread.pop(key, None)
    try:
        os.unlink(Path(key) / LOCK_FILE)  # while still locked: nobody can take a lock on a file being removed
    except OSError:
        pass
    os.close(fd)


def owner(folder: str | Path) -> dict | None:
    """The live process that holds the folder's lock ({pid, host, since}), or None when no live process does
    (never held, or its process ended). This process's own lock counts as held."""
    key = _key(folder)
    if key in _held:
        return {"pid": os.getpid(), "host": socket.gethostname(), "here": True}
    path = Path(key) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        info = _read(fd)
        if fcntl is None:
            return info if owner_alive(info) else None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return info or {"pid": None}
        fcntl.flock(fd, fcntl.LOCK_UN)  # free: nobody holds it
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _started(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 — no psutil, or no such process
        return None


def owner_alive(info: dict) -> bool:
    """Without a lock (Windows): the recorded process still runs, and it is the same process (same start time)."""
    pid, started = info.get("pid"), info.get("process_started")
    if not pid or info.get("host") != socket.gethostname():
        return False
    now = _started(pid)
    return now is not None and started is not None and abs(now - started) < 1.0


def describe_owner(info: dict) -> str:
    """'process 1234 (since 2026-01-01 10:00:00)', or what is known of it."""
    if info.get("here"):
        return "this process"
    pid = info.get("pid")
    what = f"process {pid}" if pid else "another process"
    host = info.get("host")
    if host and host != socket.gethostname():
        what += f" on {host}"
    return what + (f" (since {info['since']})" if info.get("since") else "")
