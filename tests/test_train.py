"""A run survives what ends notebook sessions: SIGKILL mid-run, an interrupt, a Stop request, an OOM step.

Each resumed or recovered run is compared with an uninterrupted run of the same seed: the same loss history
and the same final adapters, within TOL (CPU float32; the resumed run reloads exact optimizer and RNG state,
so in practice the results are bit-identical, and the tolerance only allows for kernel reordering).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nbkit import RunConfig
from nbkit.loading import data, models
from nbkit.training import outputs, runs, train
from helpers.observers import StopAt
from nbkit.training.events import RunObserver, StopControl

HELPER = Path(__file__).parent / "helpers" / "train_run.py"
TOL = 1e-5
STEPS, SAVE_EVERY = 10, 3


def config(out: Path, **changes) -> RunConfig:
    base = dict(quantization="16bit", max_seq_length=96, batch_size=4, grad_accum=1, max_steps=STEPS,
                learning_rate=3e-3, warmup_steps=2, lora_r=4, save_steps=SAVE_EVERY, save_total_limit=2,
                max_samples=80, output_dir=str(out), save_minutes=0)
    return RunConfig(**{**base, **changes})


def adapters(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def assert_same_run(result: dict, adapter_dir: Path, reference: dict, reference_dir: Path) -> None:
    assert result["steps"] == reference["steps"] == STEPS
    assert [s for s, _ in result["losses"]] == [s for s, _ in reference["losses"]]
    worst_loss = max(abs(a[1] - b[1]) for a, b in zip(result["losses"], reference["losses"]))
    assert worst_loss <= TOL, worst_loss
    got, want = adapters(adapter_dir), adapters(reference_dir)
    assert got.keys() == want.keys()
    worst = max((got[k] - want[k]).abs().max().item() for k in want)
    assert worst <= TOL, worst


def helper(cfg_path: Path, out: Path, *extra: str, wait: bool = True):
    cmd = [sys.executable, str(HELPER), str(cfg_path), str(out), *extra]
    env = {**os.environ, "NBKIT_DISPLAY": "text", "OMP_NUM_THREADS": "1"}
    if wait:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads((out / "result.json").read_text())
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for(path: Path, proc, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def references(tmp_path_factory, tiny_dir):
    """The uninterrupted run for a quantization, in its own process like the runs it is compared with."""
    made = {}

    def reference_for(quantization: str):
        if quantization not in made:
            tmp = tmp_path_factory.mktemp(f"reference-{quantization}")
            cfg_path = config(tmp / "run", quantization=quantization).save(tmp / "run.yaml")
            made[quantization] = helper(cfg_path, tmp / "result"), tmp / "result" / "adapters"
        return made[quantization]

    return reference_for


@pytest.fixture(scope="module")
def reference(references):
    return references("16bit")


@pytest.fixture(scope="module")
def reference_here(tmp_path_factory, tiny_dir):
    """The uninterrupted run in this process, for the runs that stay in this process (as in a notebook kernel):
    CPU kernels may pick other thread splits here than in a fresh process."""
    from nbkit.exporting import export

    tmp = tmp_path_factory.mktemp("reference-here")
    cfg = config(tmp / "run")
    loaded = models.load(cfg)
    result = train.run(loaded, data.prepare(cfg, loaded.tokenizer))
    export.save_lora(loaded, tmp / "adapters")
    return {"steps": result.steps, "losses": result.losses}, tmp / "adapters"


@pytest.mark.parametrize("quantization", [RunConfig().quantization, "16bit"], ids=["default-4bit", "16bit"])
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, references, quantization):
    """At the default quantization too (4-bit NF4 through bitsandbytes on CPU): observed, a checkpoint changed a
    4-bit run (writing one unpacked layers that bitsandbytes had packed for its inference kernel after the sample
    before training; nbkit.loading.bnb_cpu), so a resumed run could not match one never interrupted."""
    ref, ref_dir = references(quantization)
    cfg = config(tmp_path / "run", quantization=quantization)
    cfg_path = cfg.save(tmp_path / "run.yaml")
    proc = helper(cfg_path, tmp_path / "killed", "--stall-at", "7", wait=False)
    wait_for(tmp_path / "killed" / "stalled", proc)
    proc.send_signal(signal.SIGKILL)  # the session dies: no handler runs, nothing is flushed
    proc.wait(timeout=30)
    done = [p.name for p in outputs.checkpoints(tmp_path / "run") if outputs.is_complete(p)]
    assert done == ["checkpoint-3", "checkpoint-6"]
    # a checkpoint half-written when the process died: no completion marker, a truncated file
    half = tmp_path / "run" / "checkpoint-9"
    half.mkdir()
    (half / "adapter_model.safetensors").write_bytes(b"\x00" * 10)
    result = helper(cfg_path, tmp_path / "resumed", "--resume")
    assert result["resumed_from"].endswith("checkpoint-6")
    assert any("skipped incomplete checkpoint(s) ['checkpoint-9']" in n for n in result["notes"])
    assert_same_run(result, tmp_path / "resumed" / "adapters", ref, ref_dir)


@pytest.mark.parametrize("sig, why, code", [(signal.SIGINT, "interrupted", 130), (signal.SIGTERM, "SIGTERM", 143)],
                         ids=["interrupt", "sigterm"])
def test_resume_after_interrupt_matches_an_uninterrupted_run(tmp_path, reference, sig, why, code):
    """Ctrl-C / the notebook's interrupt, or the system ending the process: the run stops at the end of the step
    with a checkpoint there, is recorded as interrupted, and the interrupt is raised on (exit 128 + signal)."""
    ref, ref_dir = reference
    cfg_path = config(tmp_path / "run").save(tmp_path / "run.yaml")
    proc = helper(cfg_path, tmp_path / "stopped", "--stall-at", "5", wait=False)
    wait_for(tmp_path / "stopped" / "stalled", proc)
    proc.send_signal(sig)
    (tmp_path / "stopped" / "go").write_text("")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-3000:]
    stopped = json.loads((tmp_path / "stopped" / "result.json").read_text())
    assert stopped["stopped"] and stopped["steps"] == 5 and why in stopped["stop_reason"]
    assert stopped["state"] == "interrupted" and "Training interrupted at step 5/" in stdout
    marker = json.loads((tmp_path / "run" / "nbkit_run.json").read_text())
    assert (marker["status"], marker["step"]) == ("interrupted", 5)
    assert stopped["checkpoints"][-1].endswith("checkpoint-5")
    result = helper(cfg_path, tmp_path / "resumed", "--resume")
    assert result["resumed_from"].endswith("checkpoint-5")
    assert_same_run(result, tmp_path / "resumed" / "adapters", ref, ref_dir)


def test_resume_after_a_stop_request_in_the_same_kernel(tmp_path, reference_here):
    """The launcher's Stop button: the model stays usable in the kernel, and the run continues from there."""
    from nbkit.exporting import export, generate

    ref, ref_dir = reference_here
    cfg = config(tmp_path / "run")
    loaded = models.load(cfg)
    prepared = data.prepare(cfg, loaded.tokenizer)
    stop = StopControl()
    first = train.run(loaded, prepared, [StopAt(4, stop)], stop=stop)
    assert first.stopped and first.steps == 4 and first.stop_reason == "Stop button"
    assert isinstance(generate.generate(loaded, "Hi", max_new_tokens=3), str)  # still usable
    loaded = models.load(cfg)  # as after a kernel restart: a fresh model, resumed from disk
    second = train.run(loaded, prepared, resume=True)
    export.save_lora(loaded, tmp_path / "adapters")
    result = {"steps": second.steps, "losses": second.losses}
    assert_same_run(result, tmp_path / "adapters", ref, ref_dir)


def test_resume_refuses_changed_settings(tmp_path, tiny_dir):
    cfg = config(tmp_path / "run", max_steps=2, save_steps=1)
    loaded = models.load(cfg)
    train.run(loaded, data.prepare(cfg, loaded.tokenizer))
    from nbkit import ConfigError

    with pytest.raises(ConfigError, match=r"learning_rate: 0.003 → 0.1"):
        runs.plan(cfg.replace(learning_rate=0.1), resume=True)
    assert outputs.saved_config(tmp_path / "run") == cfg


class OutOfMemoryAt(RunObserver):
    """Fails step `step` with the error a GPU raises when the batch does not fit (only at the large batch), where a
    GPU raises it: as the step begins, inside the backward pass (a gradient that does not fit), or inside the
    optimizer's step (its states)."""

    def __init__(self, step: int, loaded, where: str = "step_begin"):
        self.step, self.loaded, self.where = step, loaded, where

    def as_callback(self):
        from transformers import TrainerCallback

        outer = self

        def oom(*_args, **_kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        class Raise(TrainerCallback):
            hooks = []

            def on_step_begin(self, args, state, control, optimizer=None, model=None, **kwargs):
                for hook in self.hooks:  # armed for one step only
                    hook.remove()
                self.hooks.clear()
                if state.global_step + 1 != outer.step or args.per_device_train_batch_size != 4:
                    return
                if outer.where == "step_begin":
                    oom()
                elif outer.where == "backward":  # when the first adapter's gradient is computed
                    param = next(p for p in model.parameters() if p.requires_grad)
                    self.hooks.append(param.register_hook(oom))
                else:  # before the optimizer updates anything
                    self.hooks.append(getattr(optimizer, "optimizer", optimizer).register_step_pre_hook(oom))

        return Raise()


@pytest.mark.parametrize("where", ["step_begin", "backward", "optimizer"])
def test_an_oom_step_is_recovered_with_half_the_batch(tmp_path, reference_here, where):
    ref, ref_dir = reference_here
    cfg = config(tmp_path / "run")
    loaded = models.load(cfg)
    prepared = data.prepare(cfg, loaded.tokenizer)
    phases = []

    class Phases(RunObserver):
        def phase_changed(self, phase, detail=""):
            phases.append((phase, detail))

    result = train.run(loaded, prepared, [Phases()], callbacks=[OutOfMemoryAt(5, loaded, where).as_callback()])
    assert result.steps == STEPS and loaded.config.batch_size == 2 and loaded.config.grad_accum == 2
    note = ("out of GPU memory at step 5 with batch 4 × 1: continuing from step 4 with batch 2 × 2 "
            "(same effective batch 4)")
    assert result.notes == [note] and ("recovering", note) in phases
    # the same rows per optimizer step in the same order: the run matches the uninterrupted one up to the
    # rounding of summing a step's gradient in two halves
    assert [s for s, _ in result.losses] == [s for s, _ in ref["losses"]]
    assert max(abs(a[1] - b[1]) for a, b in zip(result.losses, ref["losses"])) < 1e-4
    assert result.losses[:4] == [tuple(x) for x in ref["losses"][:4]]  # before the OOM: the very same run


def test_a_checkpoint_that_cannot_be_written_leaves_nothing_half_written(tmp_path, tiny_dir, monkeypatch, capsys):
    """The disk fills during a checkpoint: a clear error naming the last complete checkpoint, no partial one;
    and a warning came first, when free disk fell under two checkpoints' worth."""
    import errno

    from transformers import Trainer

    from nbkit import ExportError

    cfg = config(tmp_path / "run", max_steps=6, save_steps=2)
    loaded = models.load(cfg)
    prepared = data.prepare(cfg, loaded.tokenizer)
    real = Trainer._save_optimizer_and_scheduler

    def full_disk_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise OSError(errno.ENOSPC, "No space left on device", output_dir)
        return real(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", full_disk_at_step_4)
    monkeypatch.setattr(outputs, "free_gib", lambda folder: 0.0001)
    with pytest.raises(ExportError, match=r"Could not write checkpoint-4 .*No space left.*checkpoint-2") as err:
        train.run(loaded, prepared)
    assert "stopped at step 4" in str(err.value)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint-2", "nbkit_run.json"]
    assert capsys.readouterr().out.count("warning: 0.00 GiB free where checkpoints go") == 1


def test_a_checkpoint_does_not_change_a_default_4bit_run(tmp_path, tiny_dir):
    """Observed: the same 3-step run at the default 4-bit reached other losses with save_steps 1 than with 50
    (16-bit matched): writing a checkpoint unpacked the layers bitsandbytes had packed for its CPU inference kernel
    at the sample before training, and the steps after it ran another kernel (nbkit.loading.bnb_cpu)."""
    from nbkit.exporting import generate

    losses = {}
    for every in (1, 50):
        cfg = config(tmp_path / f"every-{every}", quantization=RunConfig().quantization, max_steps=3, save_steps=every)
        loaded = models.load(cfg)
        prepared = data.prepare(cfg, loaded.tokenizer)
        generate.generate(loaded, "Say hi.", max_new_tokens=3)  # as the workflow samples before training
        losses[every] = train.run(loaded, prepared).losses
    assert outputs.is_complete(tmp_path / "every-1" / "checkpoint-2")
    assert [p.name for p in outputs.checkpoints(tmp_path / "every-50")] == ["checkpoint-3"]  # the run's end only
    assert [s for s, _ in losses[1]] == [1, 2, 3] and losses[1] == losses[50]
