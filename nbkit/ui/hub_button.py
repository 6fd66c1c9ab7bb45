"""The launcher's Push row: a repo id, the formats, and a Push button that sends the run's folder to the Hugging
Face Hub on a thread (nbkit.exporting.export.push_to_hub), saying what it does and then where it went, or why not, in one line.

The token is never asked for here (a cell with a pasted token is saved with the notebook): the push reads the
user's login, HF_TOKEN or Colab's secret, and says how to log in when there is none.
"""
from __future__ import annotations

import html
import threading
from typing import Callable

import ipywidgets as w

from .frontend import main_thread

CHOICES = {"LoRA": ("lora",), "LoRA + merged 16-bit": ("lora", "merged"), "LoRA + GGUF (q8_0)": ("lora", "gguf"),
           "LoRA + merged + GGUF": ("lora", "merged", "gguf")}


class HubPush(w.VBox):
    """States: disabled (no saved run yet), ready, pushing (the button busy), pushed (links) or failed (why)."""

    def __init__(self, folder: Callable[[], str | None]):
        self.folder = folder  # the run folder to push, or None while there is none
        self.repo = w.Text(placeholder="your-name/model-name", description="Hub repo",
                           layout=w.Layout(width="auto", min_width="260px"))
        self.what = w.Dropdown(options=list(CHOICES), value="LoRA", layout=w.Layout(width="auto"))
        self.private = w.Checkbox(value=True, description="private", indent=False, layout=w.Layout(width="auto"))
        self.button = w.Button(description="Push", icon="cloud-upload", disabled=True, layout=w.Layout(width="auto"),
                               tooltip="Upload the run's exports and model card to the Hugging Face Hub")
        self.status = w.HTML()
        self.button.on_click(lambda _b: self.push())
        self.repo.observe(lambda _c: self.refresh(), names="value")
        super().__init__([w.HBox([w.Label("Share:", layout=w.Layout(width="auto")), self.repo, self.what,
                                  self.private, self.button], layout=w.Layout(flex_flow="row wrap")), self.status])

    def refresh(self) -> None:
        """Push is possible with a saved run and a repo id (and no push going)."""
        busy = getattr(self, "_thread", None) is not None and self._thread.is_alive()
        self.button.disabled = busy or not self.folder() or not self.repo.value.strip()

    def push(self, wait: bool = False):
        folder, repo = self.folder(), self.repo.value.strip()
        if not folder or not repo or self.button.disabled:
            return None
        what = CHOICES[self.what.value]

        def work():
            from ..errors import NbkitError
            from ..exporting.export import push_to_hub

            self._show(f"<i>Pushing {', '.join(what)} to {html.escape(repo)} …</i>", busy=True)
            try:
                result = push_to_hub(folder, repo, what, private=self.private.value)
                links = "<br>".join(f"<a href='{html.escape(result.endpoint)}/{html.escape(up.repo_id)}' "
                                    f"target='_blank'>{html.escape(up.repo_id)}</a> ({up.kind}: "
                                    f"{len(result.sent[up.kind])} file(s) uploaded)" for up in result.uploads)
                self._show(f"<b>Pushed:</b><br>{links}")
            except NbkitError as exc:
                lines = html.escape(str(exc)).replace("\n", "<br>")
                self._show(f"<b style='color:#b00020'>⚠ {lines}</b>")
            except Exception as exc:  # noqa: BLE001 — a bug still must not leave the button dead
                self._show(f"<b style='color:#b00020'>⚠ {type(exc).__name__}: {html.escape(str(exc))}</b>")

        self._thread = threading.Thread(target=work, name="nbkit-push", daemon=True)
        self.button.disabled = True
        self._thread.start()
        if wait:
            self._thread.join()
        return self._thread

    @main_thread
    def _show(self, text: str, busy: bool = False) -> None:
        self.status.value = text
        self.button.description = "Pushing…" if busy else "Push"
        if busy:
            self.button.disabled = True
        else:
            self._thread = None
            self.refresh()
