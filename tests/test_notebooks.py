"""Every tier notebook runs headless, top to bottom, in smoke mode (CPU, tiny model)."""
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


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
        assert "adapters changed" in text and "GGUF: ['Modelfile', 'tiny-llama-v2-q8_0.gguf']" in text
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
    assert '<div class="nbkit-progress"><code>step 15/15' in html
    assert "Training finished: 15 steps" in html
    assert 'alt="loss curve" src="data:image/png;base64,' in html
    # the gauge keeps a plain-HTML copy beside its widget view, which viewers without widgets show
    saved = nbformat.read(out, as_version=4)
    static = [o["data"]["text/html"] for c in saved.cells if c.cell_type == "code" for o in c.outputs
              if "nbkit-gauge-static" in o.get("data", {}).get("text/html", "")]
    assert static and "Predicted peak VRAM" in static[0]
