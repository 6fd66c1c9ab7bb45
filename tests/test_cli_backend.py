import subprocess
import sys

import pytest

from nbkit import HardwareError, RunConfig, backend
from nbkit.cli import main


def test_import_is_light():
    code = "import sys, nbkit; print(any(m in sys.modules for m in ('torch', 'transformers', 'unsloth')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_cpu_backend_and_notice(capsys, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    monkeypatch.setattr(backend, "_notice_shown", False)
    assert backend.ensure() == "transformers"
    assert "Unsloth is not used" in capsys.readouterr().out
    with pytest.raises(HardwareError, match="needs a CUDA GPU"):
        backend.ensure("unsloth")


def test_cli_estimate_and_check(capsys):
    assert main(["estimate", "unsloth/Meta-Llama-3.1-8B-Instruct", "--quantization", "4bit", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "weights" in out and "total" in out
    assert main(["check", "--model", "unsloth/Meta-Llama-3.1-8B-Instruct"]) == 0
    out = capsys.readouterr().out
    import torch

    if not torch.cuda.is_available():
        assert "No CUDA GPU found" in out and "8.0B parameters" in out
    assert main(["check", "--model", "nobody/no-such-model"]) == 2
    assert "was not found" in capsys.readouterr().err


def test_cli_train_from_yaml(tmp_path, capsys):
    cfg = RunConfig(quantization="16bit", max_seq_length=96, batch_size=2, grad_accum=1, max_steps=3, save_steps=0,
                    max_samples=12, output_dir=str(tmp_path / "out"))
    path = cfg.save(tmp_path / "run.yaml")
    assert main(["train", "--config", str(path)]) == 0
    assert "adapters changed" in capsys.readouterr().out
    assert (tmp_path / "out" / "lora_adapters" / "adapter_model.safetensors").exists()


def test_cli_reports_input_errors(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("quantization: 2bit\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "Unknown quantization '2bit'" in capsys.readouterr().err


def test_allocator_grows_segments_unless_the_user_chose():
    """Mixed-length rows fragment torch's default CUDA allocator: nbkit picks expandable segments at import,
    and leaves a user's own setting alone."""
    code = "import os, nbkit; print(os.environ.get('PYTORCH_CUDA_ALLOC_CONF'))"
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("PYTORCH_CUDA_ALLOC_CONF",
                                                                         "PYTORCH_ALLOC_CONF")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "expandable_segments:True"
    env["PYTORCH_CUDA_ALLOC_CONF"] = "max_split_size_mb:128"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "max_split_size_mb:128"


BACKGROUND = r"""
import sys, time
import nbkit
from nbkit import backend
from nbkit.config import RunConfig
from nbkit.hardware import check_gpu
from nbkit.ui.form import ConfigForm
from nbkit.ui.gauge import MemoryGauge
# the notebook's first cells: GPU check, the form and its gauge for a curated model
gpu = check_gpu()
config = RunConfig(model="unsloth/Llama-3.2-1B-Instruct")
form = ConfigForm(config, gpu)
MemoryGauge(gpu).update(config)
engine_needed = any(m in sys.modules for m in ("transformers", "unsloth", "trl", "peft", "datasets"))
t0 = time.perf_counter()
thread = backend.start_import()
started = time.perf_counter() - t0
name = backend.ensure()
print(engine_needed, started, thread.name, name, thread.is_alive(), "transformers" in sys.modules,
      backend.start_import() is thread)
"""


def test_engine_imports_in_the_background_while_the_form_shows():
    """session.start and the launcher begin the engine import on a thread (Unsloth takes 25-40 s on a GPU
    machine). The GPU check, the form and the gauge need nothing from it, so they show at once; ensure() (which
    every model-touching call makes) waits for the import."""
    out = subprocess.run([sys.executable, "-c", BACKGROUND], capture_output=True, text=True, check=True).stdout
    engine_needed, started, thread, name, alive, has_transformers, same = out.split()[-7:]
    assert engine_needed == "False"  # the form never waits for the engine
    assert float(started) < 0.5  # start_import returns at once
    assert thread == "nbkit-engine-import"
    assert name == "transformers" and alive == "False" and has_transformers == "True"
    assert same == "True"  # one import per process


def test_a_failed_background_import_is_raised_where_it_is_waited_for(monkeypatch):
    monkeypatch.setattr(backend, "_background", None)
    monkeypatch.setattr(backend, "_background_error", None)
    monkeypatch.setattr(backend, "_chosen", None)
    monkeypatch.setattr(backend, "cuda_available", lambda: False)
    backend.start_import("unsloth").join()
    with pytest.raises(HardwareError, match="needs a CUDA GPU"):
        backend.ensure()
