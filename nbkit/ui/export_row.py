"""The launcher's Export row: a button per format, a status line, and Push beside them (nbkit.ui.hub_button).

A view over a Runner (nbkit.runner): each export runs on the runner's thread with the functions the notebooks
call (nbkit.runner.saving), and the row draws what the runner reports. What it exports is asked of the launcher
each time (`folder()`, `loaded()`): the last run of this kernel, else the run in the form's folder on disk.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Callable

import ipywidgets as w

from ..errors import NbkitError
from ..runner import Runner, saving
from ..training.outputs import is_run_folder
from .frontend import main_thread
from .hub_button import HubPush
from .static import ERROR

EXPORTS = {"lora": "LoRA adapters", "merged": "merged 16-bit", "gguf": "GGUF (q8_0)"}


class ExportRow:
    """The row's widgets are `widgets` (the launcher shows them among its own): the buttons, the status, Push."""

    def __init__(self, folder: Callable[[], str], loaded: Callable[[], object]):
        self.folder, self.loaded = folder, loaded
        self.buttons = {kind: w.Button(description=label, icon="save", disabled=True, layout=w.Layout(width="auto"))
                        for kind, label in EXPORTS.items()}
        self.status = w.HTML()
        self.hub_push = HubPush(self.saved_run)
        for kind, button in self.buttons.items():
            button.on_click(lambda _b, kind=kind: self.export(kind))
        self.runner = Runner("nbkit-export")
        self.runner.on_end(self._ended)
        self._kind = ""
        # the row wraps in a narrow cell rather than cutting the labels short
        row = w.HBox([w.Label("Export:", layout=w.Layout(width="auto")), *self.buttons.values()],
                     layout=w.Layout(flex_flow="row wrap"))
        self.widgets = [row, self.status, self.hub_push]

    def enable(self, on: bool = True) -> None:
        for button in self.buttons.values():
            button.disabled = not on

    def export(self, kind: str, wait: bool = False):
        """Save as `kind` (lora, merged, gguf) into the run's folder on the runner's thread (`wait=True`: until it
        is saved); the status line says what is being written and then where. None when there is nothing to
        export, or an export is still being written."""
        folder, loaded = self.folder(), self.loaded()
        if (loaded is None and not is_run_folder(folder)) or self.runner.running:
            return None
        self._kind = kind
        self._show(f"<i>Saving {EXPORTS[kind]} …</i>", busy=True)
        return self.runner.start(saving(kind, folder, loaded), wait=wait)

    def saved_run(self) -> str | None:
        """The folder Push sends: the run's folder once the run is saved there."""
        folder = self.folder()
        return folder if is_run_folder(folder) and Path(folder, "nbkit_report.json").exists() else None

    def _ended(self, runner: Runner) -> None:
        exc = runner.error
        if exc is None:
            files = ", ".join(sorted(p.name for p in Path(runner.result).iterdir())[:6])
            self._show(f"<b>{EXPORTS[self._kind]} saved:</b> <code>{runner.result}</code> ({files})")
        elif isinstance(exc, NbkitError):
            self._show(f"<b style='{ERROR}'>⚠ {html.escape(str(exc))}</b>")
        else:  # a bug still must not leave the buttons dead
            self._show(f"<b style='{ERROR}'>⚠ {type(exc).__name__}: {html.escape(str(exc))}</b>")

    @main_thread
    def _show(self, text: str, busy: bool = False) -> None:
        self.status.value = text
        self.enable(not busy)
