"""Native code run in a child process, so that a crash in it is one failed test and never a dead suite.

A segmentation fault inside llama.cpp (or any C library) kills the Python process that called it: run in the test
process, it would end pytest itself and every test after it would never run. Here the native work runs in a
child `python -X faulthandler ...`; whatever goes wrong there (a signal, a Python error, a hang) becomes one
AssertionError in the test that asked, naming the signal (SIGSEGV, SIGILL, SIGABRT, …) and ending with the tail of
the child's stderr (faulthandler's Python stack included), and the suite runs on.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

LLAMA_CHILD = Path(__file__).with_name("llama_child.py")


def exit_reason(returncode: int) -> str:
    """'killed by SIGSEGV (signal 11)' for a child ended by a signal, 'exited with status N' otherwise."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "an unknown signal"
        return f"killed by {name} (signal {-returncode})"
    return f"exited with status {returncode}"


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(nothing on stderr)"


def run_python(args: list[str], *, what: str, timeout: float = 600, env: dict | None = None) -> str:
    """Run `python -X faulthandler ARGS` and return its stdout; any failure is an AssertionError saying why."""
    __tracebackhide__ = True  # pytest shows the test's line and this message, not this helper's source
    cmd = [sys.executable, "-X", "faulthandler", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise AssertionError(f"{what}: the child process did not finish in {timeout:.0f} s; its stderr ends:\n"
                             f"{_tail(stderr)}") from None
    if proc.returncode != 0:
        raise AssertionError(f"{what}: the child process {exit_reason(proc.returncode)}; its stderr ends:\n"
                             f"{_tail(proc.stderr)}")
    return proc.stdout


def run_llama(model_path: str | Path, ops: list[dict], *, params: dict | None = None, timeout: float = 600) -> list:
    """Load a GGUF into llama.cpp (llama-cpp-python) in a child process, run `ops` on it in order, return their
    results (see llama_child.py for the operations)."""
    __tracebackhide__ = True
    with tempfile.TemporaryDirectory(prefix="nbkit-llama-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request.write_text(json.dumps({"model": str(model_path), "params": params or {}, "ops": ops}))
        run_python([str(LLAMA_CHILD), str(request), str(result)], what=f"llama.cpp on {Path(model_path).name}",
                   timeout=timeout)
        return json.loads(result.read_text())
