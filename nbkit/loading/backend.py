"""Which engine trains: Unsloth on a CUDA GPU, transformers + peft elsewhere.

Unsloth patches transformers/trl/peft at import time, so it must be imported before any of them.
Every nbkit function that touches those libraries calls `ensure()` first.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import threading
import warnings

_chosen: str | None = None
_notice_shown = False

CPU_NOTICE = ("nbkit: no CUDA GPU, so Unsloth is not used: training runs on CPU through transformers + peft "
              "(same workflow, much slower; fine for the tiny smoke model).")
NO_UNSLOTH_NOTICE = ("nbkit: CUDA GPU found but Unsloth is not installed (pip install 'nbkit[gpu]'): "
                     "training runs through transformers + peft, slower and with more memory.")


# Library log lines that say nothing a user can act on, printed on every import otherwise:
# bitsandbytes asks for an optional CPU kernel package on CPUs with AVX512-BF16; datasets logs a Parquet file it
# cannot read, which nbkit's own one-line error then says with the fix.
QUIET_LOGGERS = {"bitsandbytes.backends.cpu.ops": logging.ERROR,
                 "datasets.packaged_modules.parquet.parquet": logging.CRITICAL}


def quiet_libraries() -> None:
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


ALLOCATOR_SETTING = "expandable_segments:True"
_allocator_said = False


@contextlib.contextmanager
def library_bars_off():
    """While nbkit prepares data and trains, the libraries' own tqdm bars stay off: nbkit's progress view shows
    the run, and theirs, made on a training thread, are widget messages from that thread (lost on Colab) and, saved,
    bars stuck at 0 % (Kaggle, nbconvert). Each library's setting is restored afterwards."""
    import datasets
    import huggingface_hub.utils as hub
    from transformers.utils import logging as tf

    was = (tf.is_progress_bar_enabled(), datasets.is_progress_bar_enabled(), not hub.are_progress_bars_disabled())
    tf.disable_progress_bar()
    datasets.disable_progress_bars()
    hub.disable_progress_bars()
    try:
        yield
    finally:
        for on, enable in zip(was, (tf.enable_progress_bar, datasets.enable_progress_bars, hub.enable_progress_bars)):
            if on:
                enable()


def configure_allocator() -> bool:
    """Let torch's CUDA allocator grow segments in place (expandable_segments) unless the user chose a setting.

    With rows of mixed length every step asks for differently sized blocks; the default allocator then holds on
    to ever more reserved memory (measured on an H100, 7.6B 4-bit, batch 8 x 2048 of mixed-length rows: 19.8 GiB
    reserved for 10.35 GiB allocated; with expandable segments 10.67 reserved, at the same speed). It is read
    when CUDA first allocates, so nbkit sets it when it is about to touch CUDA (check_gpu, the engine's import),
    never at `import nbkit`, never over the user's own setting, and says so once. Once CUDA has started it asks
    torch's run-time switch instead; where that is refused (or the user's setting has no expandable segments) the
    plan reserves what the default allocator does (nbkit.planning.allocator), said in one line. Returns whether
    expandable segments are set.
    """
    global _allocator_said
    from ..planning import allocator

    user = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", os.environ.get("PYTORCH_ALLOC_CONF"))
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():  # nothing to set; a plan made here is for another machine
        return False
    if user is not None:
        if allocator.current() != allocator.LATE:  # torch writes the run-time switch there too
            state = allocator.decide(user, False, None)
            if state == allocator.USER and allocator.current() != state:
                print(f"nbkit: {allocator.note(state)}")
            allocator.record(state)
        return False
    if torch.cuda.is_initialized():  # too late for the environment: torch's runtime switch, if it takes it
        late = _switch_on_late(torch)
        state = allocator.decide(None, True, late)
        if not _allocator_said or state != allocator.current():
            _allocator_said = True
            print("nbkit: CUDA was already in use, so expandable segments were "
                  + ("switched on at run time (memory reserved before stays as it was)." if late
                     else "not set. " + allocator.note(state)))
        allocator.record(state)
        return late
    # set for this process and what it starts (a per-precision run in its own process plans with the same one)
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = ALLOCATOR_SETTING
    allocator.record(allocator.EXPANDABLE)
    if not _allocator_said:
        _allocator_said = True
        print(f"nbkit: CUDA allocator set to {ALLOCATOR_SETTING} (less memory held with rows of mixed length); "
              "set PYTORCH_CUDA_ALLOC_CONF yourself to choose otherwise.")
    return True


def _switch_on_late(torch) -> bool:
    """Expandable segments for the allocations still to come, once CUDA has started (torch >= 2.1)."""
    switch = getattr(torch._C, "_accelerator_setAllocatorSettings", None) or torch.cuda.memory._set_allocator_settings
    try:
        switch(ALLOCATOR_SETTING)
        return True
    except Exception:  # noqa: BLE001 — an old torch, or one built without it: the default allocator stays
        return False


def unsloth_installed() -> bool:
    return importlib.util.find_spec("unsloth") is not None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


_import_lock = threading.RLock()
_background: threading.Thread | None = None
_background_error: BaseException | None = None


def start_import(requested: str = "auto") -> threading.Thread:
    """Begin importing the training engine (Unsloth, 25-40 s on a GPU machine; else transformers) on a thread,
    so the GPU check and the form show at once. Every nbkit function that needs the engine calls ensure(),
    which waits for this import; code of your own should call `nbkit.loading.backend.ensure()` before importing
    transformers, so that Unsloth still comes first."""
    global _background
    # torch first, on this thread: the GPU check needs it anyway, and two threads importing one package at once
    # can hand one of them a half-initialised module. While the engine imports, nbkit's own code on this thread
    # touches only torch, ipywidgets and plain Python (the form's data check reads JSON itself).
    import torch  # noqa: F401

    with _import_lock:
        if _background is None:
            def work():
                global _background_error
                try:
                    if ensure(requested) == "transformers":
                        import transformers  # noqa: F401  (the CPU engine: its import is the slow part)
                except BaseException as exc:  # re-raised by the ensure() that waits for it
                    _background_error = exc

            _background = threading.Thread(target=work, name="nbkit-engine-import", daemon=True)
            _background.start()
        return _background


def import_done() -> bool:
    """True once the engine is imported (by start_import's thread or by ensure())."""
    return _chosen is not None


def ensure(requested: str = "auto") -> str:
    """Pick the backend for this process and import Unsloth first when it is the one. Returns its name.
    If start_import() is importing it in the background, this waits for that import."""
    background = _background
    if background is not None and background is not threading.current_thread():
        background.join()
        if _background_error is not None:
            raise _background_error
    with _import_lock:
        return _ensure(requested)


def _ensure(requested: str) -> str:
    global _chosen, _notice_shown
    if requested == "auto":  # an explicit argument beats the environment
        requested = os.environ.get("NBKIT_BACKEND", "auto")
    if requested == "auto":
        requested = "unsloth" if cuda_available() and unsloth_installed() else "transformers"
        if not _notice_shown:
            _notice_shown = True
            if not cuda_available():
                print(CPU_NOTICE)
            elif not unsloth_installed():
                print(NO_UNSLOTH_NOTICE)
    if requested == "unsloth":
        from ..errors import HardwareError

        if not cuda_available():
            raise HardwareError("backend='unsloth' needs a CUDA GPU; use backend='auto' to run on CPU.")
        if not unsloth_installed():
            raise HardwareError("backend='unsloth' but Unsloth is not installed: pip install 'nbkit[gpu]'.")
        if "unsloth" not in sys.modules and "transformers" in sys.modules:
            warnings.warn(
                "transformers was imported before Unsloth, so Unsloth's speed and memory patches may be "
                "incomplete. Restart the kernel and import nbkit (or unsloth) before transformers.",
                stacklevel=2,
            )
        configure_allocator()  # Unsloth touches CUDA as it imports
        import unsloth  # noqa: F401  (import for its patches)
    _chosen = requested
    return requested


def chosen() -> str | None:
    return _chosen
