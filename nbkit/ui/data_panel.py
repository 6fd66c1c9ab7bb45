"""DataPanel: pick the data (the embedded set, a local file by path or upload, a Hub id) and see the first rows
as the model will see them: the chat template rendered, answer tokens (trained on) apart from prompt tokens
(masked). Format detection and its errors show inline, as for the other fields."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Callable

import ipywidgets as w

from ..planning.config import DEFAULT_DATASET
from ..errors import NbkitError
from .static import ERROR

TRAINED, MASKED = "#c8f7c5", "#e8e8e8"
# dark text on the pale token backgrounds whatever the theme: inherited white text (a dark theme) is unreadable there
ON_PALE = "color:#111"
UPLOADS = Path("nbkit-uploads")


def tokens_html(rows: list[list[tuple[str, bool]]]) -> str:
    """Rows of (token text, trained?) as coloured spans, with a legend."""
    legend = (f"<small><span style='background:{TRAINED};{ON_PALE}'>&nbsp;trained on (answer)&nbsp;</span> "
              f"<span style='background:{MASKED};{ON_PALE}'>&nbsp;masked (prompt, template)&nbsp;</span></small>")
    out = [legend]
    for row in rows:
        spans = "".join(f"<span class='nbkit-tok {'trained' if t else 'masked'}' "
                        f"style='background:{TRAINED if t else MASKED};{ON_PALE}'>{html.escape(text)}</span>"
                        for text, t in row)
        out.append(f"<pre class='nbkit-preview' style='white-space:pre-wrap;font-size:12px'>{spans}</pre>")
    return "".join(out)


class DataPanel(w.VBox):
    def __init__(self, dataset: str = DEFAULT_DATASET, style=None):
        style = style or {"description_width": "140px"}
        self.source = w.Combobox(value=dataset, options=[DEFAULT_DATASET], description="Data",
                                 placeholder="file path (.jsonl/.csv/.json/.parquet) or Hub id",
                                 continuous_update=False, ensure_option=False, style=style,
                                 layout=w.Layout(width="100%", max_width="520px"))
        self.upload = w.FileUpload(accept=".jsonl,.json,.csv,.parquet", multiple=False, description="Upload")
        self.preview_button = w.Button(description="Preview", icon="eye",
                                       tooltip="Show the first rows as the model will see them")
        self.status = w.HTML()
        self.preview = w.HTML()
        self._listeners: list[Callable[[str], None]] = []
        self.tokenizer_for: Callable[[], object] | None = None  # set by the form: the chosen model's tokenizer
        self.config_for: Callable[[], object] | None = None
        self.source.observe(lambda _c: self._changed(), names="value")
        self.upload.observe(lambda c: self._uploaded(c["new"]), names="value")
        self.preview_button.on_click(lambda _b: self.show_preview())
        # wraps in a narrow cell: Upload and Preview go under the field rather than out of view
        self.source.layout.flex = "1 1 300px"
        self.source.layout.min_width = "0"
        super().__init__([w.HBox([self.source, w.HBox([self.upload, self.preview_button])],
                                 layout=w.Layout(flex_flow="row wrap")), self.status, self.preview])

    @property
    def value(self) -> str:
        return self.source.value.strip()

    def on_change(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        self.preview.value = ""
        for listener in self._listeners:
            listener(self.value)

    def _uploaded(self, files) -> None:
        if not files:
            return
        item = files[0]
        UPLOADS.mkdir(exist_ok=True)
        target = UPLOADS / Path(item["name"]).name
        target.write_bytes(bytes(item["content"]))
        self.source.value = str(target)

    def check(self, config) -> bool:
        """Read and check the data (seconds, no model): the summary or the error, inline."""
        from ..loading import data

        try:
            self.status.value = f"<small>{html.escape(data.check(config))}</small>"
            return True
        except NbkitError as exc:
            self.status.value = f"<span style='{ERROR}'>⚠ {html.escape(str(exc))}</span>"
            return False

    def show_preview(self, n: int = 2) -> None:
        from ..loading import data

        if self.config_for is None or self.tokenizer_for is None:
            return
        config = self.config_for()
        if config is None or not self.check(config):
            return
        try:
            self.preview.value = tokens_html(data.preview(config, self.tokenizer_for(), n))
        except NbkitError as exc:
            self.preview.value = f"<span style='{ERROR}'>⚠ {html.escape(str(exc))}</span>"
        except OSError as exc:  # the tokenizer could not be fetched (offline)
            self.preview.value = (f"<span style='{ERROR}'>⚠ the model's tokenizer is not available here "
                                  f"({html.escape(str(exc)[:200])})</span>")
