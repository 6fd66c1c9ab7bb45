"""A real Jupyter kernel driven as a person drives a notebook: run cells one by one (Run All stops at the first
error), run them again, interrupt the kernel while a cell runs. jupyter_client's messages, nothing simulated."""
from __future__ import annotations

import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat


@dataclass
class CellRun:
    code: str
    text: str = ""  # everything printed or shown as text/plain
    error: tuple[str, str] | None = None  # (ename, evalue)
    seconds: float = 0.0
    outputs: list = field(default_factory=list)
    kinds: dict = field(default_factory=dict)  # how many iopub messages of each type (comm_msg: widget updates)


class Kernel:
    def __init__(self, cwd: Path, env: dict | None = None):
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(cwd),
                                            env={**os.environ, "NBKIT_DISPLAY": "text", **(env or {})})

    def run(self, code: str, timeout: float = 300, while_running=None) -> CellRun:
        """Execute one cell; `while_running(kernel, seconds)` is called about every 0.2 s until it ends."""
        run = CellRun(code)
        msg_id = self.kc.execute(code)
        start = time.monotonic()
        while True:
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"cell still running after {timeout} s:\n{code[:200]}")
            try:
                msg = self.kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if while_running:
                    while_running(self, time.monotonic() - start)
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            run.kinds[kind] = run.kinds.get(kind, 0) + 1
            if kind == "stream":
                run.text += content["text"]
            elif kind in ("execute_result", "display_data", "update_display_data"):
                run.outputs.append(content)
                run.text += content["data"].get("text/plain", "") + "\n"
            elif kind == "error":
                run.error = (content["ename"], content["evalue"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
        run.seconds = time.monotonic() - start
        return run

    def run_all(self, cells: list[str], **kwargs) -> list[CellRun]:
        """Run All: every cell in order, stopping after the first that fails (as Jupyter does)."""
        done = []
        for code in cells:
            done.append(self.run(code, **kwargs))
            if done[-1].error:
                break
        return done

    def interrupt(self) -> None:
        self.km.interrupt_kernel()  # Kernel → Interrupt: SIGINT to the kernel process

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def notebook_cells(path: Path, **params) -> list[str]:
    """The notebook's code cells, with `params` set right after its parameters cell (as papermill does)."""
    nb = nbformat.read(path, as_version=4)
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cells.append(cell.source)
        if "parameters" in cell.metadata.get("tags", []):
            cells.append("\n".join(f"{k} = {v!r}" for k, v in params.items()))
    return cells


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path: what "nothing changed" is checked against."""
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}
