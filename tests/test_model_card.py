"""The model card of a run folder, from a real CPU run: written at the run's end, made again from the folder alone,
and its loading instructions run as written."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nbkit import RunConfig
from nbkit.errors import ExportError
from nbkit.exporting import model_card

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from nbkit import workflow

    out = tmp_path_factory.mktemp("cardrun") / "run"
    cfg = RunConfig(quantization="16bit", max_seq_length=128, batch_size=4, grad_accum=1, max_steps=6, lora_r=4,
                    learning_rate=3e-3, save_steps=3, max_samples=48, eval_fraction=0.25, output_dir=str(out))
    workflow.run(cfg, max_new_tokens=8)
    return out


def test_every_run_ends_with_a_card(run_dir):
    from huggingface_hub import ModelCard
    from PIL import Image

    report = json.loads((run_dir / "nbkit_report.json").read_text())
    card = ModelCard.load(run_dir / "README.md")
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-generation"
    assert {"nbkit", "16bit", "lora"} <= set(card.data.tags) and "unsloth" not in card.data.tags  # a CPU run
    assert card.data.base_model is None  # nbkit's tiny model is not a Hub repo: no broken link on the Hub
    text = card.text
    assert f"| final train loss | {report['losses'][-1][1]:.4f}" in text
    assert f"| final eval loss | {report['eval_losses'][-1][1]:.4f}" in text
    assert "| GPU | CPU |" in text and "| steps | 6 of 6 |" in text
    assert "36 training rows" in text and "embedded instruct-mini" in text  # 48 rows, a quarter held out
    assert repr(report["sample_before"]) in text and repr(report["sample_after"]) in text
    assert "| `learning_rate` | `0.003` |" in text and "| `lora_r` | `4` |" in text
    assert "![loss curve](loss_curve.png)" in text
    with Image.open(run_dir / "loss_curve.png") as img:
        assert img.format == "PNG" and img.size[0] > 300
    marker = json.loads((run_dir / "nbkit_run.json").read_text())
    assert {"README.md", "loss_curve.png"} <= set(marker["written"])  # nbkit's own: replaced or removed with the run


def test_the_loading_instructions_run_as_written(run_dir, tmp_path):
    """The card's Python block, run in a fresh process elsewhere: base + adapters through transformers + peft."""
    (code,) = re.findall(r"```python\n(.*?)```", (run_dir / "README.md").read_text(), re.S)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((run_dir / "nbkit_report.json").read_text())
    # the adapters are applied: greedy decoding gives the trained model's answer, as the run sampled it
    assert proc.stdout.strip().startswith(report["sample_after"].strip()[:20])


def test_a_run_from_an_earlier_kernel_gets_its_card_from_the_folder_alone(run_dir, tmp_path):
    old = tmp_path / "old-run"
    shutil.copytree(run_dir, old)
    (old / "README.md").unlink()
    (old / "loss_curve.png").unlink()
    proc = subprocess.run([sys.executable, "-m", "nbkit", "card", str(old)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert (old / "loss_curve.png").stat().st_size > 1000
    assert (old / "README.md").read_text().split("## How to load it")[1].split("## Training data")[0] != ""
    assert "| GPU | CPU |" in (old / "README.md").read_text()  # what the marker recorded at the run's end


def test_a_readme_nbkit_did_not_write_is_never_replaced(run_dir, tmp_path):
    folder = tmp_path / "mine"
    shutil.copytree(run_dir, folder)
    marker = json.loads((folder / "nbkit_run.json").read_text())
    marker["written"].remove("README.md")  # as if the user had put their own README.md there
    (folder / "nbkit_run.json").write_text(json.dumps(marker))
    (folder / "README.md").write_text("my notes")
    with pytest.raises(ExportError, match="nbkit did not write it"):
        model_card.write_card(folder)
    assert (folder / "README.md").read_text() == "my notes"


def test_hub_ids_and_local_names_are_told_apart(tmp_path):
    assert model_card.is_hub_id("unsloth/Llama-3.2-1B-Instruct")
    assert not model_card.is_hub_id("nbkit/tiny-llama") and not model_card.is_hub_id("data/train.jsonl")
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert not model_card.is_hub_id(str(tmp_path / "a" / "b")) and not model_card.is_hub_id("./a")


def test_a_run_trained_stage_by_stage_gets_its_losses_from_the_checkpoint(run_dir, tmp_path):
    """The tier notebooks call the stages themselves and write no nbkit_report.json: the card reads the losses from
    the newest checkpoint's trainer_state.json."""
    folder = tmp_path / "staged"
    shutil.copytree(run_dir, folder)
    report = json.loads((folder / "nbkit_report.json").read_text())
    (folder / "nbkit_report.json").unlink()
    text = model_card.build(folder).text
    assert f"| final train loss | {report['losses'][-1][1]:.4f}" in text
