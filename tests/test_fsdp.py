"""Sharded training on CPU: 2 gloo processes under torchrun, the tiny model in 4-bit, FSDP2 end to end; and the
same run as two "nodes" joined by torchrun's rendezvous on localhost."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nbkit import RunConfig
from nbkit.gpus.distributed import free_port
from nbkit.errors import HardwareError
from nbkit.gpus.fsdp import check_host_memory, plain_name, trainer_args

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
ENV = {**os.environ, "NBKIT_DISPLAY": "text", "OMP_NUM_THREADS": "1"}
# How far sharded and DDP training may drift apart after the first update, from measurement (bench/cpu_spread.py,
# bench/results/cpu_spread.json, docs/portability.md): under torch's AVX2 kernels the two runs are identical; under
# AVX-512 ones they round differently from step 2 on, by about as much as one path differs from itself across the
# two kernel sets. A tolerance is 3 times the largest spread measured (either comparison, either kernel set).
SPREAD = json.loads((Path(__file__).parents[1] / "bench" / "results" / "cpu_spread.json").read_text())["fsdp_vs_ddp"]
LOSS_TOL = 3 * max(c["loss_rel_max"] for c in SPREAD.values())
ADAPTER_TOL = 3 * max(c["adapters"]["b_rel_norm"] for c in SPREAD.values())


def _config(tmp_path, name, **changes):
    settings = dict(quantization="4bit", max_seq_length=96, batch_size=2, grad_accum=1, max_steps=8,
                    learning_rate=3e-3, warmup_steps=1, lora_r=4, save_steps=0, max_samples=60,
                    output_dir=str(tmp_path / name))
    cfg = RunConfig(**{**settings, **changes})
    return cfg, cfg.save(tmp_path / f"{name}.yaml")


def _train(path, *launch, timeout=300):
    cmd = [TORCHRUN, *launch, "-m", "nbkit", "train", "--config", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        # once in several CI runs of session 8 (never reproduced alone or under load), a gloo process aborted in
        # C++ with no Python error; the same run is tried once more, and says so, so that a second abort fails
        print("test_fsdp: a process aborted in C++ (terminate called without an active exception); trying again",
              file=sys.stderr)
        import shutil

        shutil.rmtree(RunConfig.load(path).output_dir, ignore_errors=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout)
    return proc


def test_two_processes_shard_one_model_and_save_one_adapter(tmp_path, tiny_dir):
    cfg, path = _config(tmp_path, "sharded", parallelism="fsdp")
    proc = _train(path, "--nproc_per_node", "2", "--master_port", str(free_port()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(cfg.output_dir)
    report = json.loads((out / "nbkit_report.json").read_text())
    assert report["parallelism"] == "fsdp" and report["world_size"] == 2 and report["ranks_agree"]
    # sharded for real: rank 0 held about half of the model's parameter elements, not all of them
    assert 0.45 < report["shard_fraction"] < 0.6
    assert report["adapters_changed"] and report["lora_fraction_changed"] == 1.0
    assert report["config"]["optimizer"] == "auto" and report["sample_before"] is not None
    # one process talks and writes: one summary, one adapter folder
    assert proc.stdout.count("sharded (FSDP): 2 processes") == 1 and proc.stdout.count("Training finished") == 1
    # the run folder as rank 0 alone writes it: adapters, report, marker, and the model card with its loss curve
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "lora_adapters", "loss_curve.png", "nbkit_report.json",
                                                     "nbkit_run.json"]

    # the adapters load into the unsharded model in one process, every tensor whole and as trained
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    saved = load_file(str(out / "lora_adapters" / "adapter_model.safetensors"))
    assert len(saved) == report["lora_tensors"] and not any("_checkpoint_wrapped" in k for k in saved)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_dir), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(out / "lora_adapters"))
    loaded = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    assert set(loaded) == set(saved)
    for key, tensor in saved.items():
        assert torch.equal(loaded[key].to(tensor.dtype), tensor), key
    assert any(t.abs().sum() > 0 for k, t in saved.items() if "lora_B" in k)  # B starts at zero: it trained

    # sharding changes where the weights live, not what is computed: DDP on the same rows trains the same run. The
    # first loss is computed before any update, in the same dtypes by the same kernels: equal up to float32 rounding
    # (measured: equal). The losses after several optimizer steps and the final adapters tell whether both
    # followed the same updates, within the measured spread (LOSS_TOL, ADAPTER_TOL above)
    ddp_cfg, ddp_path = _config(tmp_path, "ddp", parallelism="ddp")
    proc = _train(ddp_path, "--nproc_per_node", "2", "--master_port", str(free_port()))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((Path(ddp_cfg.output_dir) / "nbkit_report.json").read_text())
    assert ddp["parallelism"] == "ddp" and ddp["shard_fraction"] == 1.0
    assert [s for s, _ in report["losses"]] == [s for s, _ in ddp["losses"]] == list(range(1, 9))
    assert report["losses"][0][1] == pytest.approx(ddp["losses"][0][1], rel=1e-6)
    for (step, sharded_loss), (_, ddp_loss) in zip(report["losses"], ddp["losses"]):
        assert sharded_loss == pytest.approx(ddp_loss, rel=LOSS_TOL), step
    assert report["losses"][-1][1] < report["losses"][0][1]  # it learned over those steps: updates were compared
    ddp_saved = load_file(str(Path(ddp_cfg.output_dir) / "lora_adapters" / "adapter_model.safetensors"))
    assert ddp_saved.keys() == saved.keys()
    # what training wrote is B (it starts at zero): the two runs' B tensors, apart relative to their size
    b_keys = [k for k in saved if "lora_B" in k]
    apart = sum(((saved[k].float() - ddp_saved[k].float()) ** 2).sum().item() for k in b_keys) ** 0.5
    size = sum((ddp_saved[k].float() ** 2).sum().item() for k in b_keys) ** 0.5
    assert apart <= ADAPTER_TOL * size, (apart / size, ADAPTER_TOL)


def test_two_nodes_rendezvous_on_localhost(tmp_path, tiny_dir):
    """The multi-machine command (docs/sharding.md), with both "machines" on this one: torchrun --nnodes 2, one
    process each, joined by the c10d rendezvous at rank 0's address."""
    cfg, path = _config(tmp_path, "nodes", parallelism="fsdp", max_steps=4)
    endpoint = f"127.0.0.1:{free_port()}"
    common = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint,
              "--rdzv_id", "nbkit-test"]
    nodes = [subprocess.Popen([TORCHRUN, *common, "-m", "nbkit", "train", "--config", str(path)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [err[-2000:] for _, err in outs]
    report = json.loads((Path(cfg.output_dir) / "nbkit_report.json").read_text())
    assert report["world_size"] == 2 and report["parallelism"] == "fsdp" and report["adapters_changed"]
    assert sum(out.count("sharded (FSDP): 2 processes") for out, _ in outs) == 1  # one node's rank 0 reports


def test_trainer_is_told_to_shard_with_fsdp2():
    args = trainer_args(RunConfig(parallelism="fsdp"))
    assert args["fsdp"] is True and args["fsdp_config"]["version"] == 2
    # the recipe's (and measured faster) model checkpointing, not FSDP's activation checkpointing
    assert args["fsdp_config"]["activation_checkpointing"] is False and args["gradient_checkpointing"] is True
    assert args["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    assert trainer_args(RunConfig(parallelism="fsdp", gradient_checkpointing=False))["gradient_checkpointing"] is False
    assert plain_name("a.layers.0._checkpoint_wrapped_module.q_proj.lora_A.default.weight") == \
        "a.layers.0.q_proj.lora_A.default.weight"


def test_host_memory_is_checked_before_loading(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    gib = 1024**3
    check_host_memory(10 * gib, available_bytes=23 * gib)  # 2 x 10 GiB + 10 %: fits in 23
    with pytest.raises(HardwareError, match=r"2 × 10.0 GiB, but this machine has 21.0 GiB free"):
        check_host_memory(10 * gib, available_bytes=21 * gib)
