"""The adapters as training needs them: CPU copies of the LoRA tensors, written to a folder, or rescued to the
cache when the run's folder cannot take them. On the tiny model, loaded as a run loads it."""
import json

import pytest
import torch

from nbkit.errors import ExportError
from nbkit.loading import models
from nbkit.planning.config import RunConfig
from nbkit.training import adapters, outputs


@pytest.fixture(scope="module")
def loaded(tiny_dir, tmp_path_factory):
    return models.load(RunConfig(quantization="16bit", lora_r=4, max_seq_length=64,
                                 output_dir=str(tmp_path_factory.mktemp("run"))))


def test_snapshot_copies_every_trainable_lora_tensor_to_the_cpu(loaded):
    trainable = {n for n, p in loaded.model.named_parameters() if p.requires_grad}
    saved = adapters.snapshot(loaded.model)
    assert saved and all("lora_" in name for name in saved)
    assert len(saved) == len(trainable)  # every trainable tensor is a LoRA one, and each is copied
    assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in saved.values())
    name, param = next((n, p) for n, p in loaded.model.named_parameters() if "lora_B" in n and p.requires_grad)
    with torch.no_grad():
        param.add_(1.0)  # training moves the model: the copy stays as it was
    try:
        assert torch.equal(adapters.snapshot(loaded.model)[name], saved[name] + 1.0)
    finally:
        with torch.no_grad():
            param.sub_(1.0)


def test_write_adapters_leaves_a_folder_peft_and_nbkit_read(loaded, tmp_path):
    adapters.write_adapters(loaded, tmp_path)
    assert (tmp_path / "adapter_model.safetensors").exists() and (tmp_path / "adapter_config.json").exists()
    assert (tmp_path / "tokenizer_config.json").exists()
    marker = json.loads((tmp_path / outputs.RUN_MARKER).read_text())
    assert marker["base_model"] == loaded.base_path and marker["lora_r"] == 4
    assert json.loads((tmp_path / "adapter_config.json").read_text())["r"] == 4


def test_a_save_that_writes_no_adapters_is_an_error(loaded, tmp_path, monkeypatch):
    monkeypatch.setattr(loaded.model, "save_pretrained", lambda directory: None)  # a disk that took nothing
    with pytest.raises(ExportError, match="produced no adapter_model file"):
        adapters.write_adapters(loaded, tmp_path)


def test_a_rescue_goes_to_a_fresh_folder_in_the_cache(loaded, tmp_path, monkeypatch):
    monkeypatch.setenv("NBKIT_CACHE", str(tmp_path))
    spare = adapters.rescue_adapters(loaded)
    assert spare.parent == tmp_path / "rescued" and (spare / "adapter_model.safetensors").exists()


def test_a_rescue_that_fails_too_leaves_nothing_half_written(loaded, tmp_path, monkeypatch):
    monkeypatch.setenv("NBKIT_CACHE", str(tmp_path))

    def full(loaded, directory):
        (directory / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(ExportError, match="A rescue copy failed too .*No space left") as info:
        adapters.rescue_adapters(loaded, write=full)
    assert "the trained adapters are only in memory now" in str(info.value)  # no Python call named: a CLI says it too
    assert list((tmp_path / "rescued").iterdir()) == []
