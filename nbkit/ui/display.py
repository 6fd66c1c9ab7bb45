"""Where progress goes: ipywidgets in a notebook with a front end, one plain-HTML output where widgets are not
reliable (Kaggle, VS Code), plain text lines elsewhere.

A kernel cannot tell whether a widget front end is attached, so headless runs (papermill, CI, the
README's command) set NBKIT_DISPLAY=text; `python -m nbkit notebook` does that for you.
"""
from __future__ import annotations

import os
import time

from .frontend import detect, in_notebook, main_thread
from .static import ERROR, WARN


def enable_colab_widgets() -> bool:
    """In Colab, ipywidgets 8 needs Colab's custom widget manager, switched on once per session; elsewhere this
    does nothing. Returns whether it was switched on."""
    import sys

    if "google.colab" not in sys.modules:
        return False
    from google.colab import output

    output.enable_custom_widget_manager()
    return True


# front ends where progress widgets are not reliable: Kaggle's can stay at "Loading widget…"
# (Kaggle/docker-python#1443), VS Code's have hung (microsoft/vscode-jupyter#17231). Plain HTML updated in place
# (a display_id, as transformers' notebook progress does since transformers#7793) shows everywhere.
HTML_FRONTENDS = ("kaggle", "vscode")


def resolve_mode(mode: str = "auto") -> str:
    """widgets, html (one output updated in place), text or silent; "auto" (or NBKIT_DISPLAY) picks for the
    front end."""
    mode = os.environ.get("NBKIT_DISPLAY", mode) if mode == "auto" else mode
    if mode == "auto":
        if not in_notebook():
            return "text"
        return "html" if detect() in HTML_FRONTENDS else "widgets"
    if mode not in ("widgets", "html", "text", "silent"):
        raise ValueError(f"display mode must be auto, widgets, html, text or silent, not {mode!r}")
    return mode


class Display:
    """The silent display; subclasses show things."""
    wants_plot = False

    def begin(self, total: int) -> None: ...
    def stats(self, line: str, values: dict) -> None: ...
    def plot(self, png: bytes) -> None: ...
    def end(self, summary: str) -> None: ...
    def error(self, message: str) -> None: ...
    def note(self, message: str) -> None: ...


class TextDisplay(Display):
    def __init__(self, interval: float = 10.0, printer=print, clock=time.perf_counter):
        self.interval, self.printer, self.clock = interval, printer, clock
        self._last = -1e9
        self.lines: list[str] = []

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        self.printer(line, flush=True) if self.printer is print else self.printer(line)

    def begin(self, total: int) -> None:
        self._emit(f"nbkit: training for {total} steps")

    def stats(self, line: str, values: dict) -> None:
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self._emit(line)

    def end(self, summary: str) -> None:
        self._emit(summary)

    def error(self, message: str) -> None:
        self._emit(message)

    def note(self, message: str) -> None:
        self._emit(f"nbkit: {message}")


class WidgetDisplay(Display):
    """Progress bar, stats line, loss curve and messages (updated where the front end shows them: frontend.call). `embedded=True`: the box already sits inside another
    widget (the launcher), so begin() does not display it again."""
    wants_plot = True

    def __init__(self, embedded: bool = False):
        enable_colab_widgets()
        self.embedded = embedded
        # Standalone, the stats line and the loss curve are one plain HTML output updated in place (a display_id,
        # as transformers' notebook progress does): it survives where widgets do not (a saved notebook, GitHub,
        # nbconvert, viewers without the widget manager). Inside the launcher they are widgets of its box.
        self.handle = None
        self._line, self._png = "starting…", b""
        import ipywidgets as w

        self.bar = w.IntProgress(value=0, min=0, max=1, description="Training", bar_style="info",
                                 layout=w.Layout(width="60%"))
        self.text = w.HTML(value="starting…")
        self.image = w.Image(format="png", layout=w.Layout(max_width="min(560px, 100%)"))
        self.message = w.HTML(value="")
        self.box = w.VBox([self.bar, self.text, self.image, self.message])

    @main_thread
    def begin(self, total: int) -> None:
        from IPython.display import display

        self.bar.max = max(total, 1)
        self.bar.value = 0
        self.bar.bar_style = "info"
        self.message.value = ""
        self.text.value = "starting…"
        if not self.embedded:
            self.box.children = [self.bar, self.message]
            display(self.box)
            self.handle = display(self._html(), display_id=True)
        else:  # inside the launcher: shown once training begins, never before (a run refused before it)
            self.image.layout.display = "none"  # until the first curve: no empty image
            self.box.layout.display = None

    def _html(self):
        return progress_html(self._line, self._png)

    def _update_html(self) -> None:
        if self.handle is not None:
            self.handle.update(self._html())

    @main_thread
    def stats(self, line: str, values: dict) -> None:
        self.bar.value = min(values["step"], self.bar.max)
        self.text.value = f"<code>{line}</code>"
        self._line = line
        self._update_html()

    @main_thread
    def plot(self, png: bytes) -> None:
        self.image.value = png
        self.image.layout.display = None
        self._png = png
        self._update_html()

    @main_thread
    def end(self, summary: str) -> None:
        self.bar.bar_style = "success"
        self._line = f"{self._line}<br><b>{summary}</b>"
        if self.handle is not None:  # said once: in the plain-HTML output, which a saved notebook keeps too
            self._update_html()
        else:  # inside the launcher: its message line; the final curve is in the launcher's plain-HTML result
            self.message.value = f"<b>{summary}</b>"
            self.image.layout.display = "none"

    @main_thread
    def note(self, message: str) -> None:
        self.message.value = f"<b style='{WARN}'>{message}</b>"
        if not self.embedded:  # standalone, the printed line is what a saved notebook keeps
            print(message)

    @main_thread
    def error(self, message: str) -> None:
        self.bar.bar_style = "danger"
        if not self.embedded:  # inside the launcher its message line says it, once
            self.message.value = f"<b style='{ERROR}'>{message}</b>"
            print(message)


def progress_html(line: str, png: bytes):
    """The stats line and the loss curve as one plain-HTML output."""
    import base64

    from IPython.display import HTML

    img = f"<br><img alt='loss curve' src='data:image/png;base64,{base64.b64encode(png).decode()}'>" if png else ""
    return HTML(f"<div class='nbkit-progress'><code>{line}</code>{img}</div>")


class HtmlDisplay(Display):
    """No widgets: one plain-HTML output (stats line, loss curve, summary) updated in place by its display_id,
    for front ends whose widgets are not reliable, or by choice (NBKIT_DISPLAY=html)."""
    wants_plot = True

    def __init__(self):
        self.handle, self._line, self._png = None, "starting…", b""

    def _update(self) -> None:
        if self.handle is not None:
            self.handle.update(progress_html(self._line, self._png))

    def begin(self, total: int) -> None:
        from IPython.display import display

        self.handle = display(progress_html(self._line, self._png), display_id=True)

    @main_thread
    def stats(self, line: str, values: dict) -> None:
        self._line = line
        self._update()

    @main_thread
    def plot(self, png: bytes) -> None:
        self._png = png
        self._update()

    @main_thread
    def end(self, summary: str) -> None:
        self._line = f"{self._line}<br><b>{summary}</b>"
        self._update()

    @main_thread
    def note(self, message: str) -> None:
        self._line = f"{self._line}<br>{message}"
        self._update()

    error = note


def make_display(mode: str = "auto", text_interval: float = 10.0) -> Display:
    mode = resolve_mode(mode)
    if mode == "widgets":
        return WidgetDisplay()
    if mode == "html":
        return HtmlDisplay()
    if mode == "text":
        return TextDisplay(text_interval)
    return Display()
