"""Tracking settings: what the trainer gets, and the one line before loading when a tracker cannot work."""
import importlib.util

import pytest

from nbkit import RunConfig
from nbkit.errors import ConfigError
from nbkit.training import tracking


def test_trainer_args_name_the_run_after_its_folder(tmp_path):
    cfg = RunConfig(output_dir=str(tmp_path / "my-run"), report_to="trackio")
    assert tracking.trainer_args(cfg) == {"report_to": "trackio", "run_name": "my-run", "project": "nbkit"}
    assert tracking.trainer_args(cfg.replace(report_to="none")) == {"report_to": "none"}
    assert tracking.preflight(cfg.replace(report_to="none")) == [] and tracking.callbacks(cfg) == []


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_wandb_missing_is_said_with_the_install_line(tmp_path):
    with pytest.raises(ConfigError, match=r"needs the wandb package: pip install wandb"):
        tracking.preflight(RunConfig(output_dir=str(tmp_path), report_to="wandb"))


def test_wandb_without_a_login_or_network(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: object())  # as if installed
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = RunConfig(output_dir=str(tmp_path / "run"), report_to="wandb")
    with pytest.raises(ConfigError, match="needs a W&B login: run `wandb login`"):
        tracking.preflight(cfg)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ConfigError, match="cannot reach W&B .*WANDB_MODE=offline"):
        tracking.preflight(cfg)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert tracking.preflight(cfg) == [f"tracking: wandb (run run)"]


def test_the_forms_advanced_section_sets_report_to():
    from nbkit.planning.hardware import GpuInfo
    from nbkit.ui.form import ConfigForm

    form = ConfigForm(RunConfig(), GpuInfo(False))
    assert form.report_to.value == "none"
    form.report_to.value = "tensorboard"
    assert form.config.report_to == "tensorboard"
    form.apply(RunConfig(report_to="wandb"))
    assert form.report_to.value == "wandb"
