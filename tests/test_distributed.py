"""Data-parallel training on CPU: 2 processes under torchrun, gloo backend, the tiny model."""
import json
import os
import subprocess
import sys
from pathlib import Path

from nbkit import RunConfig
from nbkit.gpus.distributed import free_port
from nbkit.planning.recommend import recommend
from nbkit.specs import spec_for


def test_two_processes_train_one_adapter(tmp_path, tiny_dir):
    out = tmp_path / "out"
    cfg = RunConfig(quantization="16bit", max_seq_length=96, batch_size=2, grad_accum=1, max_steps=12,
                    learning_rate=3e-3, warmup_steps=1, lora_r=4, save_steps=0, max_samples=60, output_dir=str(out))
    path = cfg.save(tmp_path / "run.yaml")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "NBKIT_DISPLAY": "text", "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()), "-m", "nbkit", "train",
           "--config", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "nbkit_report.json").read_text())
    assert report["world_size"] == 2 and report["ranks_agree"] is True and report["adapters_changed"]
    # tokens are every GPU's (rank 0 trained about half of them), tokens/s the global figure, both labelled
    assert report["processes"] == 2 and 0 < report["tokens_this_rank"] < report["tokens"]
    assert report["tokens"] < 3 * report["tokens_this_rank"]
    assert "tokens/s over 2 GPUs (this GPU" in proc.stdout
    losses = [loss for _, loss in report["losses"]]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    # the run folder as rank 0 alone writes it: adapters, report, marker, and the model card with its loss curve
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "lora_adapters", "loss_curve.png", "nbkit_report.json",
                                                     "nbkit_run.json"]
    assert (out / "lora_adapters" / "adapter_model.safetensors").exists()
    # one process talks: a single progress stream and summary
    assert proc.stdout.count("Training finished") == 1 and proc.stdout.count("data parallel: 2 processes") == 1


def test_recommend_counts_the_global_batch(fake_gpu):
    spec = spec_for("unsloth/Meta-Llama-3.1-8B-Instruct")
    one = recommend(spec, fake_gpu(12.0), target_effective_batch=64)
    two = recommend(spec, fake_gpu(12.0), target_effective_batch=64, processes=2)
    batch = one.config.batch_size
    assert batch == two.config.batch_size and 1 < batch < 16  # memory is per GPU
    assert one.config.grad_accum == 64 // batch and two.config.grad_accum == 64 // (2 * batch)
    assert abs(two.config.global_batch(2) - one.config.global_batch(1)) <= batch
    assert "on each of 2 GPUs" in two.reason


def test_notebook_launch_forks_processes(tmp_path, tiny_dir):
    """The notebook entry point: accelerate's notebook_launcher forks 2 processes (gloo on CPU).

    Run in a fresh interpreter, as in a fresh kernel: notebook_launcher refuses a process that already
    created an Accelerator (other tests here did)."""
    out = tmp_path / "out"
    code = (
        "from nbkit import RunConfig, workflow\n"
        "from nbkit.ui.progress import TrainingProgress\n"
        "cfg = RunConfig(quantization='16bit', max_seq_length=96, batch_size=2, grad_accum=1, max_steps=6,"
        f" save_steps=0, max_samples=40, lora_r=4, output_dir={str(out)!r})\n"
        "r = workflow.run_parallel(cfg, num_processes=2, view=TrainingProgress)\n"
        "print('REPORT', r['world_size'], r['ranks_agree'], r['steps'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NBKIT_DISPLAY": "text"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REPORT 2 True 6" in proc.stdout
    assert proc.stdout.count("Training finished") == 1
    assert (out / "lora_adapters" / "adapter_model.safetensors").exists()


def test_a_failed_save_on_rank_0_releases_the_other_ranks(tmp_path, tiny_dir):
    """Rank 0 cannot write its adapters: every rank must stop with the reason, not wait at a barrier forever."""
    out = tmp_path / "out"
    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2, lora_r=4,
                    save_steps=0, max_samples=20, output_dir=str(out))
    torchrun = Path(sys.executable).with_name("torchrun")
    full_disk = Path(__file__).parent / "helpers" / "full_disk.py"  # rank 0's disk is full, rescue fails too
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(free_port()), str(full_disk), "train",
           "--config", str(cfg.save(tmp_path / "run.yaml"))]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "NBKIT_DISPLAY": "text", "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert "Rank 0 could not save this run" in proc.stderr  # rank 1's message
    assert "Training finished but saving the adapters failed" in proc.stderr and "Free disk space" in proc.stderr
    assert "save_lora(" not in proc.stderr and ".loaded" not in proc.stderr  # no Python advice in a command's error
