"""A part of a view closed under a title until it is wanted."""
from __future__ import annotations

from typing import Callable

import ipywidgets as w


def folded(box: w.Widget, title: str, on_open: Callable[[], None] | None = None) -> w.Widget:
    """`box` closed under `title`: an Accordion, or on Colab (whose widget manager breaks Accordion and Tab,
    colabtools#3571) a toggle button that shows and hides it. `on_open` is called each time it opens (what is
    costly to fill, filled when first looked at)."""
    from .frontend import detect

    def opened(change):
        if on_open and change["new"] is not None and change["new"] is not False:  # index 0 (Accordion) or True
            on_open()

    if detect() != "colab":
        accordion = w.Accordion(children=[box], selected_index=None)
        accordion.set_title(0, title)
        accordion.observe(opened, names="selected_index")
        return accordion
    toggle = w.ToggleButton(value=False, description=title, icon="chevron-right", layout=w.Layout(width="auto"))
    box.layout.display = "none"

    def flip(change):
        box.layout.display = None if change["new"] else "none"
        toggle.icon = "chevron-down" if change["new"] else "chevron-right"
        opened(change)

    toggle.observe(flip, names="value")
    return w.VBox([toggle, box])
