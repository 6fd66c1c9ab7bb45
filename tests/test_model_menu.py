"""nbkit.ui.model_menu: the form's folded table of each model's plan, filled when first opened."""
from nbkit.planning.hardware import GpuInfo
from nbkit.ui.form import ConfigForm
from nbkit.ui.model_menu import ModelMenu, render
from nbkit.planning.menu import model_menu


def test_the_menu_is_planned_only_when_opened_and_only_once(monkeypatch):
    menu = ModelMenu(GpuInfo(available=False), ["unsloth/Qwen3-4B", "unsloth/gpt-oss-20b"])
    assert menu.table.value == "" and not menu.filled
    fold = menu.children[0]
    calls = []
    import nbkit.ui.model_menu as module

    real = module.model_menu
    monkeypatch.setattr(module, "model_menu", lambda *a: calls.append(a) or real(*a))
    if hasattr(fold, "selected_index"):
        fold.selected_index = 0
        fold.selected_index = None
        fold.selected_index = 0
    else:  # Colab's toggle
        fold.children[0].value = True
    assert menu.filled and len(calls) == 1
    assert menu.table.value.count("<tr>") == 3 and "gpt-oss-20b" in menu.table.value


def test_families_planned_under_in_measured_runs_are_marked_with_why():
    html = render(model_menu(GpuInfo(available=False), ["unsloth/Qwen3-30B-A3B-Instruct-2507",
                                                        "unsloth/Mixtral-8x7B-Instruct-v0.1-bnb-4bit",
                                                        "unsloth/gpt-oss-20b"]))
    rows = [r.split("</tr>")[0] for r in html.split("<tr>")[2:]]
    assert ["†" in r for r in rows] == [True, True, False]
    assert "halves the batch" in html and "does not fit" in html and "opacity" in html


def test_the_form_shows_the_menu_under_the_model_field():
    form = ConfigForm(gpu=GpuInfo(available=False))
    assert form.children[0] is form.model and form.children[1] is form.menu
