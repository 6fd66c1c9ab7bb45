"""The form's model menu: every curated model with the plan recommend() makes for it on this GPU (or on each
tier's card, without one), folded under the model field and filled when first opened (planning them all takes
about two seconds of CPU). A view over nbkit.planning.menu."""
from __future__ import annotations

import html

import ipywidgets as w

from ..planning.hardware import GpuInfo
from ..planning.memory_moe import plan_caveat
from ..planning.menu import model_menu
from ..specs import spec_for
from .fold import folded

TITLE = "Which models fit: the plan for each"


class ModelMenu(w.VBox):
    def __init__(self, gpu: GpuInfo, models: list[str] | None = None):
        self.gpu, self.models = gpu, models
        self.table = w.HTML(value="")
        self.filled = False
        where = "this GPU" if gpu.available else "each tier's card"
        super().__init__([folded(self.table, f"{TITLE} on {where}", on_open=self.fill)])

    def fill(self) -> None:
        """Plan every model (once) and draw the table."""
        if self.filled:
            return
        self.table.value = "<i>Planning each model…</i>"
        self.table.value = render(model_menu(self.gpu, self.models))
        self.filled = True


def render(rows) -> str:
    """The menu as an HTML table: one row per model, one column per card, "does not fit" greyed; families whose
    measured runs held more than their plan carry a mark and the sentence that says so."""
    cards = [p.card for p in rows[0].plans] if rows else []
    head = "".join(f"<th style='text-align:left;padding:0 8px'>{html.escape(c)}</th>" for c in cards)
    body, notes = [], {}
    for row in rows:
        caveat = plan_caveat(spec_for(row.model))
        mark = ""
        if caveat:
            mark = "†"
            notes[mark] = caveat
        cells = "".join(
            f"<td style='padding:0 8px{'' if p.fits else ';opacity:0.55'}'>{html.escape(p.text())}</td>"
            for p in row.plans)
        body.append(f"<tr><td style='padding:0 8px'><code>{html.escape(row.model)}</code>{mark}</td>"
                    f"<td style='padding:0 8px'>{html.escape(row.describe)}</td>{cells}</tr>")
    foot = "".join(f"<div>{m} {html.escape(text)}</div>" for m, text in notes.items())
    return (f"<table><tr><th style='text-align:left;padding:0 8px'>model</th>"
            f"<th style='text-align:left;padding:0 8px'>size</th>{head}</tr>{''.join(body)}</table>"
            f"<div style='font-size:90%'>Planned peak memory (reserved) and precision at the settings nbkit would "
            f"pick.{foot}</div>")
