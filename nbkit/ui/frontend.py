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
    return "jupyter" if in_notebook() else "headless"


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


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


WIDGET_STATE_SETTING = {"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": True}}


def save_widget_state(prefix: str = sys.prefix) -> str:
    """Make JupyterLab and Notebook 7 of this environment save widget state with the notebook, so that a notebook
    reopened after its kernel stopped shows nbkit's widgets as they were (not "Error displaying widget: model not
    found"). Written as a settings override of the environment (`share/jupyter/lab/settings/overrides.json`), only
    where it sets nothing of its own for the widget manager: a choice already made there is kept. Returns what was
    done, in words."""
    import json
    from pathlib import Path

    path = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    key = next(iter(WIDGET_STATE_SETTING))
    if key in current:
        return f"{path} already sets {key}; left as it is"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**current, **WIDGET_STATE_SETTING}, indent=2))
    return f"{path}: widget state is saved with notebooks"
