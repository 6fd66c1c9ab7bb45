"""chat(loaded): a prompt box and streamed answers, with a switch between the fine-tuned and the base model.

A thin view over nbkit.exporting.generate.stream: the same greedy generation through the chat template that the
notebooks' before/after samples use; the base model is the same loaded model with its adapters switched off.
"""
from __future__ import annotations

import html
import threading

import ipywidgets as w

from .frontend import main_thread

MODES = [("fine-tuned (adapters on)", True), ("base model (adapters off)", False), ("both, side by side", "both")]


class Chat(w.VBox):
    def __init__(self, loaded, max_new_tokens: int = 128, allow_unfinished: bool = False):
        from ..training.runs import require_finished

        require_finished(loaded.trained, "chat with", allow_unfinished)  # a partial model is never presented as the result
        self.loaded = loaded
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
        self._thread: threading.Thread | None = None
        self.clear = w.Button(description="Clear", icon="trash", tooltip="Forget this conversation's turns")
        self.send.on_click(lambda _b: self.ask(self.prompt.value))
        if "submitted" in self.prompt.trait_names():  # Enter in the box sends, as the button does
            self.prompt.observe(lambda _c: self.ask(self.prompt.value), names="submitted")
        self.clear.on_click(lambda _b: self.reset())
        super().__init__([self.notice, self.mode, w.HBox([self.prompt, w.VBox([self.send, self.clear])],
                                                          layout=w.Layout(flex_flow="row wrap")), self.transcript])

    def reset(self) -> None:
        """Clear the transcript (a turn still streaming finishes first)."""
        if self._thread is None or not self._thread.is_alive():
            self.turns = []
            self._render()

    def ask(self, prompt: str, wait: bool = False) -> threading.Thread | None:
        """Send `prompt`; the answer streams into the log. `wait=True` blocks until it is complete."""
        prompt = prompt.strip()
        if not prompt or (self._thread is not None and self._thread.is_alive()):
            return None
        adapters = self.mode.value
        self.send.disabled = True
        self.prompt.value = ""
        self._thread = threading.Thread(target=self._answer, args=(prompt, adapters), daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()
        return self._thread

    def _answer(self, prompt: str, adapters) -> None:
        """Stream the answer (both answers, one after the other, side by side: the fine-tuned one first)."""
        from ..exporting.generate import stream

        number = len({t[3] for t in self.turns})
        try:
            for side in ((True, False) if adapters == "both" else (adapters,)):
                self.turns.append((prompt, "", side, number))
                answer = ""
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
        rows = []
        for number in dict.fromkeys(t[3] for t in self.turns):  # each question once, its answers beside each other
            answers = [t for t in self.turns if t[3] == number]
            cells = "".join(f"<div style='flex:1;min-width:220px'><b>Model ({'fine-tuned' if on else 'base'}):</b> "
                            f"<span class='nbkit-chat-answer'>{_shown(answer)}</span></div>"
                            for _, answer, on, _ in answers)
            # line breaks as written, in the prompt and in the answers
            rows.append(f"<div class='nbkit-chat-turn' style='white-space:pre-wrap'><b>You:</b> "
                        f"{html.escape(answers[0][0])}<div style='display:flex;flex-wrap:wrap;gap:12px'>{cells}"
                        "</div></div>")
        self.transcript.value = "".join(rows)


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


def _shown(answer: str) -> str:
    if answer and not answer.strip():  # an answer of blank lines would otherwise look like no answer at all
        return f"<i>(only whitespace: {len(answer)} characters, {answer.count(chr(10))} line breaks)</i>"
    return html.escape(answer)


def chat(loaded, max_new_tokens: int = 128, allow_unfinished: bool = False) -> Chat:
    """Chat with `loaded`; a model whose run stopped or was interrupted only with `allow_unfinished=True`."""
    from IPython.display import display

    ui = Chat(loaded, max_new_tokens, allow_unfinished)
    display(ui)
    return ui
