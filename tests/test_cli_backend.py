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
