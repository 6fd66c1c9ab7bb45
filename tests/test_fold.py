"""nbkit.ui.fold: a part of a view closed under a title, opened by the user, filled when opened."""
import ipywidgets as w
import pytest

from nbkit.ui.fold import folded


@pytest.mark.parametrize("frontend", ["jupyter", "colab"])
def test_closed_until_opened_and_told_each_time_it_opens(monkeypatch, frontend):
    monkeypatch.setenv("NBKIT_FRONTEND", frontend)
    box, opened = w.HTML("inside"), []
    fold = folded(box, "More", on_open=lambda: opened.append(1))
    if frontend == "colab":  # Colab breaks Accordion (colabtools#3571): a toggle shows and hides the box
        toggle = fold.children[0]
        assert fold.children[1] is box and box.layout.display == "none" and toggle.description == "More"
        toggle.value = True
        assert box.layout.display is None and opened == [1]
        toggle.value = False
        assert box.layout.display == "none" and opened == [1]
        toggle.value = True
    else:
        assert isinstance(fold, w.Accordion) and fold.selected_index is None and fold.get_title(0) == "More"
        fold.selected_index = 0  # the first (only) part: index 0 must count as opened
        fold.selected_index = None
        assert opened == [1]
        fold.selected_index = 0
    assert opened == [1, 1]
