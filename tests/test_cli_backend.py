import os
import subprocess
import sys

import pytest

from nbkit import HardwareError, RunConfig
from nbkit.loading import backend
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


def test_importing_nbkit_changes_nothing_in_the_environment():
    code = ("import json, os; before = dict(os.environ); import nbkit, nbkit.workflow, nbkit.ui; "
            "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_allocator_is_set_once_when_cuda_is_first_touched_never_over_the_users(monkeypatch, capsys):
    """Mixed-length rows fragment torch's default CUDA allocator: nbkit picks expandable segments just before it
    first touches CUDA, says so once, and leaves a user's own setting alone."""
    import torch

    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(backend, "_allocator_said", False)
    from nbkit.planning import allocator

    monkeypatch.setattr(allocator, "_state", None)  # what this test decides does not outlive it
    assert backend.configure_allocator()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert capsys.readouterr().out.count("CUDA allocator set to expandable_segments:True") == 1
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")
    assert not backend.configure_allocator()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"
    said = capsys.readouterr().out  # left alone, and planned for: one line says so
    assert said.count("\n") == 1 and "is yours without expandable segments" in said
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # too late for the environment: CUDA allocates
    asked = []  # torch's run-time switch instead (tests/test_allocator.py: and when torch refuses it)
    monkeypatch.setattr(torch._C, "_accelerator_setAllocatorSettings", asked.append, raising=False)
    assert backend.configure_allocator() and asked == ["expandable_segments:True"]
    assert "PYTORCH_CUDA_ALLOC_CONF" not in os.environ


def test_an_explicit_backend_beats_the_environment(monkeypatch):
    monkeypatch.setattr(backend, "_chosen", backend._chosen)
    monkeypatch.setenv("NBKIT_BACKEND", "unsloth")
    assert backend._ensure("transformers") == "transformers"
    monkeypatch.setenv("NBKIT_BACKEND", "transformers")
    assert backend._ensure("auto") == "transformers"  # the environment still picks what was left to nbkit


BACKGROUND = r"""
import sys, time
import nbkit
from nbkit.loading import backend
from nbkit.planning.config import RunConfig
from nbkit.planning.hardware import check_gpu
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


def nbkit(*args, **popen):
    env = {**os.environ, "NBKIT_DISPLAY": "text", "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen([sys.executable, "-m", "nbkit", *args], env=env, text=True, **popen)
    return subprocess.run([sys.executable, "-m", "nbkit", *args], env=env, text=True, capture_output=True,
                          timeout=300)


def small_run(tmp_path, **changes):
    settings = dict(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2, lora_r=4,
                    save_steps=1, max_samples=8, output_dir=str(tmp_path / "run"))
    return RunConfig(**{**settings, **changes}).save(tmp_path / "run.yaml")


def test_cli_resume_of_a_finished_run_changes_nothing_then_export_from_the_folder(tmp_path, tiny_dir):
    from helpers.kernel import tree_digest

    path = small_run(tmp_path)
    assert nbkit("train", "--config", str(path)).returncode == 0
    done = tree_digest(tmp_path / "run")
    again = nbkit("train", "--config", str(path), "--resume")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already finished (2/2 steps; exported: lora); nothing was changed" in again.stdout
    assert "training for" not in again.stdout and tree_digest(tmp_path / "run") == done
    # the same resume asking for an export (one that failed, say): the export alone, from the folder
    export = nbkit("train", "--config", str(path), "--resume", "--merged")
    assert export.returncode == 0, export.stderr[-2000:]
    assert "no training" in export.stdout and "training for" not in export.stdout
    assert (tmp_path / "run" / "merged_16bit" / "model.safetensors").exists()
    marker = __import__("json").loads((tmp_path / "run" / "nbkit_run.json").read_text())
    assert marker["exported"]["merged"]["step"] == 2 and marker["status"] == "finished"
    assert {k: v for k, v in tree_digest(tmp_path / "run").items() if k.startswith("lora_adapters")} == \
        {k: v for k, v in done.items() if k.startswith("lora_adapters")}  # the adapters were not re-saved
    nothing = nbkit("export", str(tmp_path))
    assert nothing.returncode == 2 and "is not an nbkit run folder" in nothing.stderr


def test_cli_interrupt_exits_130_and_records_the_run_as_interrupted(tmp_path, tiny_dir):
    import json
    import signal
    import time

    path = small_run(tmp_path, max_steps=400, max_samples=None, save_steps=1000)
    proc = nbkit("train", "--config", str(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    marker = tmp_path / "run" / "nbkit_run.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (marker.exists() and json.loads(marker.read_text())["status"] == "training"):
        time.sleep(0.1)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    m = json.loads(marker.read_text())
    assert m["status"] == "interrupted" and 0 < m["step"] < 400
    assert f"Training interrupted at step {m['step']}/400" in stderr
    assert (tmp_path / "run" / f"checkpoint-{m['step']}" / "nbkit_checkpoint.json").exists()
    assert not (tmp_path / "run" / "nbkit_report.json").exists()  # no report that says ok


def test_without_a_network_an_unknown_model_id_fails_at_once(monkeypatch):
    """Offline without HF_HUB_OFFLINE, the libraries retry for 20-30 s; one quick request to the Hub finds out
    first, and then only the local cache is asked."""
    import time

    from huggingface_hub import constants

    from nbkit import ModelNotFoundError
    from nbkit.loading import hub
    from nbkit.specs import spec_for

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(hub, "_reachable", [])
    start = time.perf_counter()
    assert hub.hub_reachable() is False
    with pytest.raises(ModelNotFoundError, match="could not be asked whether it exists"):
        spec_for("nobody/no-such-model")
    assert time.perf_counter() - start < 10


def test_cli_a_run_cut_short_after_training_is_finished_by_the_command_it_names(tmp_path, tiny_dir):
    """The after-sample fails (as on Qwen3-MoE): the CLI says in one line that the run is trained and saved and
    which command finishes it (exit non-zero); --resume says what is missing instead of "nothing was changed";
    the command named makes the export the run was asked for."""
    import json
    from pathlib import Path

    run = tmp_path / "run"
    path = small_run(tmp_path, save_steps=0)
    faults = str(Path(__file__).parent / "helpers" / "faults.py")
    env = {**os.environ, "NBKIT_DISPLAY": "text", "OMP_NUM_THREADS": "1", "NBKIT_FAULT_AT": "sample",
           "NBKIT_FAULT": "error"}
    first = subprocess.run([sys.executable, faults, "train", "--config", str(path), "--merged"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 2 and "Traceback" not in first.stderr, first.stderr[-2000:]
    (line,) = [x for x in first.stderr.splitlines() if x.startswith("nbkit: error:")]
    assert "Training finished, but the after-sample failed: RuntimeError: injected failure at sample" in line
    assert line.endswith(f"Finish it with: nbkit export {run} --merged") and ".loaded" not in first.stderr
    assert (run / "lora_adapters" / "adapter_model.safetensors").exists()
    again = nbkit("train", "--config", str(path), "--resume")
    assert again.returncode == 1 and "nothing was changed" not in again.stdout + again.stderr
    assert "not done: the after-sample, the merged export, the report" in again.stderr
    assert f"Finish it with: nbkit export {run} --merged" in again.stderr
    done = nbkit("export", str(run))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "making what the run was asked to export and did not: merged" in done.stdout
    assert (run / "merged_16bit" / "model.safetensors").exists()
    assert json.loads((run / "nbkit_run.json").read_text())["todo"] == ["sample", "report"]
    final = nbkit("train", "--config", str(path), "--resume")
    assert final.returncode == 0 and "nothing was changed" in final.stdout


def test_a_missing_tracker_or_hub_login_is_one_line_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """report_to names a package that is not installed here (wandb, trackio, tensorboard are not test
    dependencies), hub_checkpoints needs the network: each is one line and exit 2, before anything loads."""
    import importlib.util

    cfg = RunConfig(quantization="16bit", max_seq_length=96, max_steps=2, save_steps=0, max_samples=8,
                    output_dir=str(tmp_path / "out"))
    path = cfg.save(tmp_path / "run.yaml")
    missing = [t for t, pkg in (("wandb", "wandb"), ("trackio", "trackio")) if importlib.util.find_spec(pkg) is None]
    for tracker in missing:
        assert main(["train", "--config", str(path), "--report-to", tracker]) == 2
        err = capsys.readouterr().err
        assert f"needs the {tracker} package: pip install {tracker}" in err and len(err.strip().splitlines()) == 1
    cfg.replace(hub_checkpoints="alice/ckpts").save(path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "hub_checkpoints='alice/ckpts': Cannot reach" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing written, nothing loaded


def test_cli_push_dry_run_and_card(tmp_path, capsys):
    cfg = RunConfig(quantization="16bit", max_seq_length=96, batch_size=2, grad_accum=1, max_steps=2, save_steps=0,
                    max_samples=8, output_dir=str(tmp_path / "out"))
    assert main(["train", "--config", str(cfg.save(tmp_path / "run.yaml"))]) == 0
    capsys.readouterr()
    assert main(["push", str(tmp_path / "out"), "alice/x", "--gguf", "q4_k_m", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("lora -> alice/x: README.md, adapter_config.json, adapter_model.safetensors")
    assert "nbkit_run.json" not in out[0]
    assert out[1] == "gguf -> alice/x-GGUF: not exported yet (push exports it first)"
    (tmp_path / "out" / "README.md").unlink()
    assert main(["card", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "README.md").read_text().startswith("---\nlibrary_name: peft")
