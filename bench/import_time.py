"""How long a notebook user waits for the GPU check and the form, and for the engine (Unsloth) to be ready.

python bench/import_time.py
Two processes, one per way of starting:
  background  what nbkit does: session.start() begins Unsloth's import on a thread; the GPU check, the form and
              its memory gauge show while it runs; loading the model waits for it
  blocking    the old way: Unsloth imported before anything is shown
Each records seconds from its start to: nbkit imported, the GPU check printed, the form and gauge built, the
engine ready (Unsloth imported). Writes bench/results/import_time.json.
"""
from __future__ import annotations

import time

PROCESS_START = time.perf_counter()

import argparse  # noqa: E402
import sys  # noqa: E402

from common import child_result, emit, print_table, write_json  # noqa: E402

MODEL = "unsloth/Meta-Llama-3.1-8B-Instruct"


def measure(mode: str) -> dict:
    marks = {}

    def mark(what):
        marks[what] = time.perf_counter() - PROCESS_START

    import nbkit  # noqa: F401
    from nbkit.loading import backend
    from nbkit import session

    mark("nbkit_imported")
    if mode == "blocking":
        backend.ensure()
        mark("engine_ready")
    s = session.start("H100", smoke=False)
    mark("gpu_check_shown")
    from nbkit.planning.config import RunConfig
    from nbkit.ui.form import ConfigForm
    from nbkit.ui.gauge import MemoryGauge

    config = RunConfig(model=MODEL, quantization="4bit")
    ConfigForm(config, s.gpu)
    MemoryGauge(s.gpu).update(config)
    mark("form_shown")
    backend.ensure()
    if "engine_ready" not in marks:
        mark("engine_ready")
    return {"mode": mode, **marks, "unsloth_imported": "unsloth" in sys.modules}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        emit(measure(args.mode))
        return
    rows = []
    for mode in ("blocking", "background"):
        _, found, out = child_result([sys.executable, __file__, "--mode", mode], 200)
        print(out[-800:])
        rows.append(found or {"mode": mode, "error": "no result"})
    print_table(rows, ["mode", "nbkit_imported", "gpu_check_shown", "form_shown", "engine_ready"])
    write_json("import_time.json", {"rows": rows})


if __name__ == "__main__":
    main()
