"""chat(model): a prompt box and streamed answers, with a switch between the fine-tuned and the base model.

A thin view over nbkit.exporting.generate.stream: the same greedy generation through the chat template that the
notebooks' before/after samples use; the base model is the same loaded model with its adapters switched off.
`chat(ui)` follows a launcher: it answers with the launcher's last trained model, whichever run that is. The
transcript is also a plain-HTML output updated in place (its display id), which a saved notebook keeps. Each
answer is generated on a Runner's thread (nbkit.runner), one at a time.
"""
from __future__ import annotations

import html
import threading
import time

import ipywidgets as w

from ..runner import Runner
from .frontend import main_thread
from .static import ERROR, offline_line, transcript_html

MODES = [("fine-tuned (adapters on)", True), ("base model (adapters off)", False), ("both, side by side", "both")]
NO_RUN_YET = "Train in the launcher above first, then run this cell again."


def _model_of(source):
    """The loaded model a chat answers with: `source` itself, a WorkflowReport's, or a launcher's last run's."""
    if hasattr(source, "form") and hasattr(source, "report"):  # a launcher: its last run, now
        source = source.report
    return getattr(source, "loaded", source)


class Chat(w.VBox):
    def __init__(self, source, max_new_tokens: int = 128, allow_unfinished: bool = False):
        from ..training.runs import require_finished

        self.source = source
        self.allow_unfinished = allow_unfinished
        loaded = self.loaded
        if loaded is None:
            raise ValueError(NO_RUN_YET)
        require_finished(loaded.trained, "chat with", allow_unfinished)  # a partial model is never presented as the result
        self.max_new_tokens = max_new_tokens
        self.prompt = chat_input("Ask the model something, then press Enter (Shift+Enter: a new line)")
        self.send = w.Button(description="Send", button_style="primary", icon="paper-plane")
        self.mode = w.ToggleButtons(options=MODES, value=True, description="Answer with",
                                    style={"button_width": "190px"})
        state = loaded.trained
        self.notice = w.HTML(value="" if state is None or state.finished else
                             f"<b>This model trained {state.step} of {state.total} steps ({state.status}).</b>")
        self.transcript = w.HTML(value="")
        self.turns: list[tuple[str, str, bool, int]] = []  # (prompt, answer, adapters on, question number)
        self.static = None  # the transcript's plain-HTML output (attach_static), shown there instead of here
        self._shown_at = 0.0
        self.runner = Runner("nbkit-chat")  # the answer being generated: one at a time
        self.clear = w.Button(description="Clear", icon="trash", tooltip="Forget this conversation's turns")
        self.send.on_click(lambda _b: self.ask(self.prompt.value))
        if "submitted" in self.prompt.trait_names():  # Enter in the box sends, as the button does
            self.prompt.observe(lambda _c: self.ask(self.prompt.value), names="submitted")
        self.clear.on_click(lambda _b: self.reset())
        offline = w.HTML(offline_line("chat"))
        offline.add_class("nbkit-offline")
        super().__init__([self.notice, self.mode, w.HBox([self.prompt, w.VBox([self.send, self.clear])],
                                                          layout=w.Layout(flex_flow="row wrap")), self.transcript,
                          offline])
        self.add_class("nbkit-live")  # nbkit.ui.static: its controls hide once its kernel is gone

    @property
    def loaded(self):
        return _model_of(self.source)

    def attach_static(self, handle) -> None:
        """Show the transcript in `handle` (an output made with display_id=True) instead of in the widget: one
        copy, which a saved notebook, nbconvert and GitHub keep."""
        self.static = handle
        self.children = [c for c in self.children if c is not self.transcript]
        self._render(done=True)

    def reset(self) -> None:
        """Clear the transcript (a turn still streaming finishes first)."""
        if not self.runner.running:
            self.turns = []
            self._render()

    def ask(self, prompt: str, wait: bool = False) -> threading.Thread | None:
        """Send `prompt`; the answer streams into the log. `wait=True` blocks until it is complete."""
        prompt = prompt.strip()
        if not prompt or self.runner.running:
            return None
        adapters = self.mode.value
        self.send.disabled = True
        self.prompt.value = ""
        return self.runner.start(lambda _stop, _events: self._answer(prompt, adapters), wait=wait)

    def _unavailable(self) -> str:
        """Why the model cannot answer now ("" when it can): a launcher training a new run, or none yet."""
        from ..errors import NbkitError
        from ..training.runs import require_finished

        if getattr(self.source, "running", False):
            return "The launcher is training a new run: ask again when it ends."
        loaded = self.loaded
        if loaded is None:
            return NO_RUN_YET
        try:
            require_finished(loaded.trained, "chat with", self.allow_unfinished)
        except NbkitError as exc:
            return str(exc)
        return ""

    def _answer(self, prompt: str, adapters) -> None:
        """Stream the answer (both answers, one after the other, side by side: the fine-tuned one first)."""
        from ..exporting.generate import stream

        number = len({t[3] for t in self.turns})
        try:
            for side in ((True, False) if adapters == "both" else (adapters,)):
                self.turns.append((prompt, "", side, number))
                answer, why = "", self._unavailable()
                if why:
                    self.turns[-1] = (prompt, f"⚠ {why}", side, number)
                    break
                try:
                    for piece in stream(self.loaded, prompt, self.max_new_tokens, adapters=side):
                        answer += piece
                        self.turns[-1] = (prompt, answer, side, number)
                        self._render()
                except Exception as exc:  # noqa: BLE001 — shown in the chat, not lost in a thread
                    self.turns[-1] = (prompt, f"⚠ {type(exc).__name__}: {exc}", side, number)
        finally:
            self._render(done=True)

    @main_thread
    def _render(self, done: bool = False) -> None:
        if done:
            self.send.disabled = False
        rows = transcript_html(self.turns)
        self.transcript.value = rows
        now = time.monotonic()
        if self.static is not None and (done or now - self._shown_at > 0.25):  # a few updates a second at most
            from IPython.display import HTML

            self._shown_at = now
            self.static.update(HTML(f"<div class='nbkit-chat-static'>{rows}</div>"))


CHAT_INPUT_ESM = """
function render({ model, el }) {
  const box = document.createElement("textarea");
  box.placeholder = model.get("placeholder");
  box.value = model.get("value");
  box.className = "nbkit-chat-input widget-textarea";
  box.style.cssText = "width:100%;height:60px;box-sizing:border-box;font:inherit;color:inherit;" +
                      "background:var(--jp-layout-color1, #fff);border:1px solid var(--jp-border-color1, #999)";
  const send = () => { model.set("value", box.value); model.save_changes(); };
  box.addEventListener("input", send);
  box.addEventListener("keydown", (event) => {
    event.stopPropagation();  // the notebook's own keys (Shift+Enter runs the cell) stay out of the chat box
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      model.set("value", box.value);
      model.set("submitted", model.get("submitted") + 1);
      model.save_changes();
    }
  });
  model.on("change:value", () => { if (box.value !== model.get("value")) box.value = model.get("value"); });
  model.on("change:disabled", () => { box.disabled = model.get("disabled"); });
  el.style.width = "100%";
  el.style.maxWidth = "520px";
  el.appendChild(box);
}
export default { render };
"""


def chat_input(placeholder: str) -> w.DOMWidget:
    """A text box where Enter sends and Shift+Enter starts a new line (`submitted` counts the sends), made with
    anywidget; without it, ipywidgets' Textarea (no key events: the Send button sends)."""
    try:
        import anywidget
        import traitlets
    except ImportError:
        return w.Textarea(placeholder=placeholder, layout=w.Layout(width="100%", max_width="520px", height="60px"))

    class ChatInput(anywidget.AnyWidget):
        _esm = CHAT_INPUT_ESM
        value = traitlets.Unicode("").tag(sync=True)
        placeholder = traitlets.Unicode("").tag(sync=True)
        submitted = traitlets.Int(0).tag(sync=True)
        disabled = traitlets.Bool(False).tag(sync=True)

    return ChatInput(placeholder=placeholder)


def chat(source, max_new_tokens: int = 128, allow_unfinished: bool = False) -> Chat | None:
    """Chat with `source`: a loaded model, a run's report, or a launcher (`chat(ui)`: its last trained model, as it
    changes). A model whose run stopped or was interrupted only with `allow_unfinished=True`. Before a launcher has
    trained, or while its run is unfinished, the cell says what to do in one line instead of failing."""
    from IPython.display import HTML, display

    from ..errors import NbkitError

    try:
        ui = Chat(source, max_new_tokens, allow_unfinished)
    except (ValueError, NbkitError) as exc:
        if not hasattr(source, "form"):  # a model or report: the error is the caller's to see
            raise
        display(HTML(f"<div class='nbkit-chat-static'><b style='{ERROR if isinstance(exc, NbkitError) else ''}'>"
                     f"{html.escape(str(exc))}</b></div>"))
        return None
    display(ui)
    ui.attach_static(display(HTML("<div class='nbkit-chat-static'></div>"), display_id=True))
    return ui
