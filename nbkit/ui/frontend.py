"""Which front end shows the widgets, and what it cannot do.

Colab does not render widget updates sent from a background thread (googlecolab/colabtools#3373), yet the
launcher trains on one so that its Stop button stays live. There, every widget update nbkit makes off the main
thread is handed to the kernel's own event loop (`kernel.io_loop.add_callback`, thread-safe), which sends it from
the main thread as soon as the kernel is idle: the training thread never touches a widget itself. Elsewhere
updates go out at once. `NBKIT_FRONTEND` (colab, kaggle, vscode, jupyter, headless) overrides the detection.
"""
from __future__ import annotations

import functools
import os
import sys
import threading

FRONTENDS = ("colab", "kaggle", "vscode", "jupyter", "headless")


def detect() -> str:
    """The front end this kernel serves, from what each one leaves in the kernel's environment."""
    forced = os.environ.get("NBKIT_FRONTEND", "").strip().lower()
    if forced:
        if forced not in FRONTENDS:
            raise ValueError(f"NBKIT_FRONTEND={forced!r}: choose one of {', '.join(FRONTENDS)}.")
        return forced
    if "google.colab" in sys.modules:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ:
        return "kaggle"
    if "VSCODE_PID" in os.environ or "VSCODE_CWD" in os.environ:
        return "vscode"
    from .display import in_notebook

    return "jupyter" if in_notebook() else "headless"


def updates_from_threads() -> bool:
    """Whether widget updates may be sent from any thread (everywhere but Colab)."""
    return detect() != "colab"


def _kernel_loop():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    kernel = getattr(get_ipython(), "kernel", None)
    return getattr(kernel, "io_loop", None)


def call(fn, *args, **kwargs) -> None:
    """Run `fn` now, or, off the main thread where the front end needs it, on the kernel's main thread."""
    loop = None
    if threading.current_thread() is not threading.main_thread() and not updates_from_threads():
        loop = _kernel_loop()
    if loop is None:
        fn(*args, **kwargs)
    else:
        loop.add_callback(functools.partial(fn, *args, **kwargs))


def main_thread(method):
    """A view method that touches widgets: routed through call(), so it runs where the front end can show it."""
    @functools.wraps(method)
    def routed(*args, **kwargs):
        call(method, *args, **kwargs)

    return routed
