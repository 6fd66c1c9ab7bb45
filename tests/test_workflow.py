"""End to end on CPU: the shipped data set, the tiny model, real (4-bit and full-precision) LoRA training."""
import json
from pathlib import Path

import pytest
import torch

from nbkit import ModelNotFoundError, RunConfig
from nbkit.loading import data, models
from nbkit.exporting import export, verify
from nbkit.training import train
from nbkit.loading.data import IGNORE


def mean(xs):
    return sum(xs) / len(xs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = RunConfig(quantization="16bit", max_seq_length=128, batch_size=4, grad_accum=1, max_steps=30,
                    learning_rate=3e-3, warmup_steps=2, lora_r=8, lora_alpha=16, save_steps=10, output_dir=str(out))
    loaded = models.load(cfg)
    prepared = data.prepare(cfg, loaded.tokenizer)
    before = verify.snapshot(loaded.model)
    result = train.run(loaded, prepared, progress=False)
    return cfg, loaded, prepared, before, result


def test_loss_falls_and_adapters_change(trained):
    cfg, loaded, prepared, before, result = trained
    assert result.steps == 30 and len(result.losses) == 30
    assert mean([l for _, l in result.losses[-5:]]) < mean([l for _, l in result.losses[:5]]) - 0.05
    report = verify.adapters_changed(loaded.model, before)
    assert report.ok and report.changed == report.tensors == 2 * 7 * 4  # A and B, 7 targets, 4 layers
    lengths = sorted(len(ids) for ids in prepared.train["input_ids"])
    # 30 steps x 4 rows, drawn in shuffled order: between the 120 shortest and the 120 longest rows
    assert sum(lengths[:120]) <= result.tokens <= sum(lengths[-120:])
    assert result.tokens_per_second > 0


def test_checkpoints_are_where_promised(trained):
    cfg, *_, result = trained
    names = sorted(Path(p).name for p in result.checkpoints)
    assert names == ["checkpoint-20", "checkpoint-30"]  # save_total_limit=2 keeps the newest two
    assert all((Path(p) / "adapter_model.safetensors").exists() for p in result.checkpoints)


def test_save_reload_gives_identical_logits(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg, loaded, prepared, *_ = trained
    adapter_dir = export.save_lora(loaded, tmp_path / "lora")
    assert (adapter_dir / "adapter_model.safetensors").exists() and (adapter_dir / "nbkit_run.json").exists()
    batch = torch.tensor([prepared.train[0]["input_ids"]])
    loaded.model.eval()
    with torch.no_grad():
        expected = loaded.model(input_ids=batch).logits
        base = AutoModelForCausalLM.from_pretrained(loaded.base_path, dtype=torch.float32)
        reloaded = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
        assert torch.equal(reloaded(input_ids=batch).logits, expected)
        merged_dir = export.save_merged(loaded, tmp_path / "merged", adapter_dir)
        # "merged_16bit" means 16-bit on disk, and plain transformers reloads it to the same logits
        # eager attention: torch's bf16 SDPA on CPU picks its kernel from the CPU's real features, which a forced
        # ATEN_CPU_CAPABILITY=avx2 on an AVX-512 CPU then refuses (docs/portability.md); the weights are what is checked
        merged = AutoModelForCausalLM.from_pretrained(merged_dir, attn_implementation="eager").eval()
        assert {p.dtype for p in merged.parameters()} == {torch.bfloat16}
        in_memory = export.merged_model(loaded, adapter_dir).eval()
        in_memory.set_attn_implementation("eager")
        assert torch.equal(merged(input_ids=batch).logits, in_memory(input_ids=batch).logits)
        # and the 16-bit merge is the trained model up to bf16 rounding of the weights
        ref = expected.float()
        assert ((merged(input_ids=batch).logits.float() - ref).norm() / ref.norm()).item() < 2e-2
    loaded.model.train()


def test_gguf_on_cpu_needs_no_saved_adapters(trained, tmp_path):
    """As the notebooks call it: no adapter folder given, the export saves its own (and cleans it up)."""
    folder = export.save_gguf(trained[1], tmp_path / "gguf")
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", "tiny-llama-v3-q8_0.gguf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gguf"]  # nothing else left behind


def test_qlora_4bit_trains_on_cpu(tmp_path):
    """Real NF4 weights (bitsandbytes) with LoRA on top: the 8 GB tier's recipe, on the tiny model."""
    cfg = RunConfig(quantization="4bit", max_seq_length=128, batch_size=4, grad_accum=1, max_steps=20,
                    learning_rate=3e-3, warmup_steps=1, lora_r=8, save_steps=0, output_dir=str(tmp_path))
    loaded = models.load(cfg)
    layer = loaded.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert type(layer).__name__ == "Linear4bit" and layer.weight.quant_state.quant_type == "nf4"
    prepared = data.prepare(cfg, loaded.tokenizer)
    before = verify.snapshot(loaded.model)
    result = train.run(loaded, prepared, progress=False)
    assert mean([l for _, l in result.losses[-5:]]) < mean([l for _, l in result.losses[:5]])
    assert verify.adapters_changed(loaded.model, before).ok
    assert all(label == IGNORE for label in prepared.train[0]["labels"][:5])


def test_workflow_run_writes_a_report(tmp_path):
    from nbkit import workflow

    cfg = RunConfig(quantization="16bit", max_seq_length=128, batch_size=4, grad_accum=1, max_steps=4,
                    lora_r=4, save_steps=0, max_samples=40, output_dir=str(tmp_path))
    report = workflow.run(cfg, merged=True, gguf=True, progress=False, max_new_tokens=4)
    saved = json.loads((tmp_path / "nbkit_report.json").read_text())
    assert saved["steps"] == 4 and saved["adapters_changed"] is True
    assert Path(report.merged_dir, "model.safetensors").exists()
    assert report.ok and saved["ok"] is True and saved["failures"] == {}
    assert len(list(Path(report.gguf_dir).glob("*.gguf"))) == 1


def test_a_failed_export_is_a_failure_of_the_run(tmp_path, monkeypatch):
    """A requested export that fails is a failed step in the report, with the adapters kept: never a note."""
    from nbkit import ExportError, workflow

    def broken(*args, **kwargs):
        raise ExportError("llama.cpp's converter could not convert it")

    monkeypatch.setattr(export, "save_gguf", broken)
    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2,
                    lora_r=4, save_steps=0, max_samples=8, output_dir=str(tmp_path))
    report = workflow.run(cfg, gguf=True, max_new_tokens=2)
    saved = json.loads((tmp_path / "nbkit_report.json").read_text())
    assert not report.ok and report.failures == {"GGUF export": "llama.cpp's converter could not convert it"}
    assert saved["ok"] is False and "GGUF export" in saved["failures"]
    assert "FAILED GGUF export" in report.summary()
    assert (tmp_path / "lora_adapters" / "adapter_model.safetensors").exists()


def test_unknown_model_id_is_explained():
    with pytest.raises(ModelNotFoundError) as err:
        models.load(RunConfig(model="unsloth/Meta-Llama-3.1-8B-Instrukt"))
    text = str(err.value)
    assert "was not found" in text and "Did you mean unsloth/Meta-Llama-3.1-8B-Instruct" in text
    assert "HF_HUB_OFFLINE=1" in text


def test_fp8_without_gpu_fails_before_loading():
    from nbkit import HardwareError

    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(HardwareError, match="FP8 LoRA needs an NVIDIA GPU"):
        models.load(RunConfig(quantization="fp8"))


def test_lora_targets_that_do_not_exist(tmp_path):
    from nbkit import ConfigError

    with pytest.raises(ConfigError, match="Its linear layers are .*'q_proj'"):
        models.load(RunConfig(quantization="16bit", target_modules=("qkv_proj",)))


def test_a_failed_save_keeps_the_trained_model(tmp_path, monkeypatch):
    """The disk is full where the run saves: the adapters go to a rescue folder, the error says where, and the
    trained model stays in memory; the run folder holds no half-written adapters."""
    import errno

    from nbkit import ExportError, workflow

    write = export._write_lora

    def full_disk(loaded, directory):
        if "rescued" not in str(directory):
            raise OSError(errno.ENOSPC, "No space left on device", str(directory))
        return write(loaded, directory)

    monkeypatch.setattr(export, "_write_lora", full_disk)
    out = tmp_path / "run"
    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2, lora_r=4,
                    save_steps=0, max_samples=10, output_dir=str(out))
    with pytest.raises(ExportError, match="saving the adapters failed") as info:
        workflow.run(cfg, max_new_tokens=2)
    err = info.value
    assert err.result.steps == 2 and ".loaded" not in str(err)
    assert "No space left on device" in str(err) and str(err.saved_to) in str(err)
    assert (Path(err.saved_to) / "adapter_model.safetensors").exists()
    assert sorted(p.name for p in out.iterdir()) == ["nbkit_run.json"]  # nothing half-written, no temp folder
    marker = json.loads((out / "nbkit_run.json").read_text())
    assert marker["status"] == "finished" and marker["todo"][0] == "save"
    assert marker["cut_short"].startswith("saving the adapters failed: ExportError: Could not write")
    monkeypatch.setattr(export, "_write_lora", write)
    saved = export.save_lora(err.loaded, tmp_path / "elsewhere")  # the advice in the message works
    assert (saved / "adapter_model.safetensors").exists()


def test_speed_after_warm_up_leaves_out_the_first_steps():
    from nbkit.training.train import TrainResult

    # a 10 s first step (compilation), then 1 s per 1000-token step
    marks = [(10.0, 1000)] + [(10.0 + i, 1000 * (i + 1)) for i in range(1, 10)]
    r = TrainResult(steps=10, losses=[(1, 1.0)], train_seconds=19.0, tokens=10000, step_marks=marks)
    assert r.tokens_per_second == pytest.approx(10000 / 19.0)
    assert r.steady_tokens_per_second() == pytest.approx(1000.0)
    assert TrainResult(steps=3, losses=[(1, 1.0)], step_marks=marks[:3]).steady_tokens_per_second() is None
    assert "526 tokens/s (1,000 after warm-up)" in r.summary()


def test_a_real_run_records_one_mark_per_step(trained):
    result = trained[4]
    assert len(result.step_marks) == result.steps
    times = [t for t, _ in result.step_marks]
    assert times == sorted(times) and result.step_marks[-1][1] == result.tokens
    assert result.steady_tokens_per_second() > 0
