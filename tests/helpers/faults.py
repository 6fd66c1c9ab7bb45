"""Faults injected at one stage after the last training step, for the tests: an error, a full disk, Ctrl-C or SIGTERM.

In-process: `install(stage, fault, monkeypatch.setattr)`. As the CLI in a child process:
`NBKIT_FAULT_AT=STAGE NBKIT_FAULT=KIND python faults.py ARGS...` (as `python -m nbkit ARGS...`).

STAGE: save (the adapters), verify, sample (the after-sample: generate's second call), merged, gguf.
KIND: error (RuntimeError), ENOSPC (OSError: no space left on device), SIGINT, SIGTERM, SIGINTx2 (twice). A signal is sent to the
process itself as the stage begins; the stage then runs as it would (the signal's handler decides what happens).
Everything else is nbkit's real pipeline on the tiny model.
"""
import errno
import os
import signal
import sys
import time

from nbkit.exporting import export, generate, gguf, verify

TARGETS = {"save": (export, "save_lora"), "verify": (verify, "adapters_changed"), "sample": (generate, "generate"),
           "merged": (export, "merged_model"), "gguf": (gguf, "convert")}


def install(stage: str, fault: str, patch=setattr) -> None:
    module, name = TARGETS[stage]
    real = getattr(module, name)
    calls = []

    def faulty(*args, **kwargs):
        calls.append(1)
        if stage == "sample" and len(calls) == 1:  # the answer before training: not this stage
            return real(*args, **kwargs)
        if fault == "error":
            raise RuntimeError(f"injected failure at {stage}")
        if fault == "ENOSPC":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "injected")
        for _ in range(2 if fault == "SIGINTx2" else 1):  # SIGINTx2: Ctrl-C pressed again, impatient
            os.kill(os.getpid(), getattr(signal, fault.removesuffix("x2")))
            time.sleep(1)
        time.sleep(2)  # a handler that raises does so here, as a real signal arriving mid-stage would
        return real(*args, **kwargs)

    patch(module, name, faulty)


if __name__ == "__main__":
    from nbkit.cli import main

    install(os.environ["NBKIT_FAULT_AT"], os.environ["NBKIT_FAULT"])
    sys.exit(main(sys.argv[1:]))
