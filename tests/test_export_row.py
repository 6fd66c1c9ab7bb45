"""The launcher's Export row: nothing to export leaves it idle; an export runs on its runner's thread and the
status line says where it was saved; an export that fails says why and leaves the buttons working."""
from __future__ import annotations

from pathlib import Path

import pytest

from nbkit import RunConfig
from nbkit.ui.export_row import ExportRow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_dir):
    """A finished tiny CPU run, saved (its adapters and report)."""
    from nbkit import workflow

    out = tmp_path_factory.mktemp("exportrow") / "run"
    workflow.run(RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2, lora_r=4,
                           save_steps=0, max_samples=8, output_dir=str(out)), max_new_tokens=4)
    return out


def test_without_a_run_there_is_nothing_to_export_or_push(tmp_path):
    row = ExportRow(lambda: str(tmp_path / "nothing"), lambda: None)
    assert row.export("lora") is None and row.saved_run() is None and not row.runner.running
    assert row.status.value == "" and all(b.disabled for b in row.buttons.values())
    assert row.hub_push in row.widgets and row.status in row.widgets


def test_a_run_on_disk_is_exported_on_the_runners_thread(run_dir):
    row = ExportRow(lambda: str(run_dir), lambda: None)  # an earlier kernel's run: exported from its folder
    assert row.saved_run() == str(run_dir)
    thread = row.export("lora", wait=True)
    assert thread.name == "nbkit-export" and row.runner.error is None
    assert f"LoRA adapters saved:</b> <code>{run_dir / 'lora_adapters'}</code>" in row.status.value
    assert "adapter_model.safetensors" in row.status.value and not any(b.disabled for b in row.buttons.values())


def test_an_export_that_fails_says_why_and_leaves_the_buttons_working(run_dir):
    class Broken:  # a model object without what saving needs: a bug, not the user's mistake
        pass

    row = ExportRow(lambda: str(run_dir), Broken)
    row.export("merged", wait=True)
    assert isinstance(row.runner.error, AttributeError) and "⚠ AttributeError" in row.status.value
    assert not any(b.disabled for b in row.buttons.values())
    assert not (Path(run_dir) / "merged_16bit").exists()  # nothing half-written in the user's run folder
