"""Every notebook runs headless, top to bottom: the tier notebooks in smoke mode (CPU, tiny model), and the workshop."""
import json
import re
from pathlib import Path

import nbformat
import pytest
from helpers.readme import readme_answers

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if p.stem != "workshop")
WORKSHOP = ROOT / "notebooks" / "workshop.ipynb"


def test_all_tiers_present_and_clean():
    assert {p.stem for p in NOTEBOOKS} == {"8gb", "16gb", "24gb", "h100"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
        params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "smoke = " in params[0].source
        assert code[1].source.startswith("import nbkit")  # before anything imports transformers


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_mode(path, tmp_path):
    from nbkit.cli import main

    out = tmp_path / path.name
    assert main(["notebook", str(path), "-o", str(out), "--cwd", str(tmp_path)]) == 0
    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/markdown", "")
                   for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "SMOKE MODE" in text and "Training finished" in text
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    runs = list((tmp_path / "outputs" / path.stem).iterdir())  # each run makes a fresh folder in here
    assert len(runs) == 1
    if path.stem == "h100":
        assert "| 16bit |" in text and "Only one mode ran" in text
        assert "--- 16bit: training in a fresh process" in text  # peaks comparable: one process per precision
        assert (runs[0] / "16bit/lora_adapters/adapter_model.safetensors").exists()
    else:
        assert "adapters changed" in text and "GGUF: ['Modelfile', 'tiny-llama-v3-q8_0.gguf']" in text
        # what the embedded data teaches shows: not before training, in the answer after it
        before = text.split("before training: ", 1)[1].splitlines()[0]
        after = text.split("after training: ", 1)[1].splitlines()[0]
        assert "Ahoy!" not in before and after.startswith("'Ahoy! ")
        if path.stem in ("8gb", "16gb"):  # the README's promise, on the prompt it quotes
            assert (before, after) == readme_answers()
        saved = runs[0]
        assert (saved / "lora_adapters" / "adapter_model.safetensors").exists()
        assert (saved / "merged_16bit" / "model.safetensors").exists()
        assert json.loads((saved / "lora_adapters" / "nbkit_run.json").read_text())["model"] == "nbkit/tiny-llama"


@pytest.mark.slow
def test_progress_survives_in_the_saved_notebook(tmp_path, monkeypatch):
    """Run with widgets (as in JupyterLab), then read the saved .ipynb as a viewer without widgets does: the
    final progress line, the loss curve and the memory prediction are there as plain HTML."""
    import papermill
    from nbconvert import HTMLExporter

    monkeypatch.setenv("NBKIT_DISPLAY", "widgets")
    out = tmp_path / "8gb.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks/8gb.ipynb"), str(out), cwd=str(tmp_path), progress_bar=False)
    html, _ = HTMLExporter().from_filename(str(out))
    assert '<div class="nbkit-progress"><code>step 60/60' in html
    assert "Training finished: 60 steps" in html
    assert 'alt="loss curve" src="data:image/png;base64,' in html
    # the gauge keeps a plain-HTML copy beside its widget view, which viewers without widgets show
    saved = nbformat.read(out, as_version=4)
    static = [o["data"]["text/html"] for c in saved.cells if c.cell_type == "code" for o in c.outputs
              if "nbkit-gauge-static" in o.get("data", {}).get("text/html", "")]
    assert static and "Predicted peak VRAM" in static[0]


@pytest.mark.slow
def test_the_workshop_runs_and_shows_each_idea(tmp_path):
    from nbkit.cli import main

    nb = nbformat.read(WORKSHOP, as_version=4)
    assert all(not c.outputs for c in nb.cells if c.cell_type == "code")
    out = tmp_path / "workshop.ipynb"
    assert main(["notebook", str(WORKSHOP), "-o", str(out), "--cwd", str(tmp_path)]) == 0
    cells = [c for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"]
    assert not [o for c in cells for o in c.outputs if o.output_type == "error"]
    text = ["".join(o.get("text", "") for o in c.outputs) for c in cells]
    load, mask, plan, before, stop, resume, after = text[1:]
    assert "lora_A" in load and "LoRA trains" in load and "KiB" in load
    first_row = mask.split("\n\n")[0]
    trained = "".join(re.findall(r"\[([^\]]*)\]", first_row))  # the preview brackets what is trained on
    assert "<|im_start|>user" in first_row and trained.startswith("Ahoy!") and "What does" not in trained
    assert "training peak" in plan and "GiB" in plan
    assert "Ahoy" not in before
    assert "stopped at step 20" in stop and "checkpoint-20" in stop
    assert "finished at step 60" in resume and "resumed from" in resume
    fine_tuned = [line for line in after.splitlines() if "fine-tuned:" in line]
    assert len(fine_tuned) == 3 and all("'Ahoy! " in line for line in fine_tuned)
    evals = [float(x) for x in after.split("eval loss: ", 1)[1].split(" → ")]
    assert evals[-1] < evals[0]
