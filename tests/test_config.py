import pytest

from nbkit import ConfigError, RunConfig


@pytest.mark.parametrize("changes, message", [
    ({"quantization": "3bit"}, "Unknown quantization '3bit'"),
    ({"quantization": "8bit"}, "'8bit' is not offered: nbkit has not measured it"),
    ({"lora_r": 0}, "lora_r=0 is invalid"),
    ({"lora_r": -4}, "LoRA rank r must be a positive integer"),
    ({"batch_size": 0}, "use grad_accum for a larger effective batch"),
    ({"lora_dropout": 1.0}, "lora_dropout=1.0 must be in [0, 1)"),
    ({"learning_rate": 0}, "learning_rate=0 must be > 0"),
    ({"max_seq_length": 8}, "too short"),
    ({"optimizer": "lion"}, "Unknown optimizer 'lion'"),
    ({"backend": "vllm"}, "Unknown backend 'vllm'"),
    ({"target_modules": ()}, "target_modules is empty"),
    ({"max_steps": 0, "num_epochs": 0}, "Set max_steps > 0"),
    ({"model": " "}, "model must be a Hub id"),
])
def test_invalid_values_raise_with_a_fix(changes, message):
    with pytest.raises(ConfigError) as err:
        RunConfig(**changes)
    assert message in str(err.value)


def test_replace_validates_too():
    with pytest.raises(ConfigError, match="batch_size"):
        RunConfig().replace(batch_size=-1)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    cfg = RunConfig(model="unsloth/Qwen3-4B", quantization="16bit", lora_r=32, target_modules=("q_proj", "v_proj"))
    loaded = RunConfig.load(cfg.save(tmp_path / f"run{suffix}"))
    assert loaded == cfg
    assert loaded.target_modules == ("q_proj", "v_proj")


def test_unknown_field_in_file_is_named(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: x\nlr: 0.1\n")
    with pytest.raises(ConfigError, match=r"Unknown RunConfig field\(s\) \['lr'\]"):
        RunConfig.load(path)


def test_optimizer_auto_resolves_per_device():
    cfg = RunConfig()
    assert cfg.resolved_optimizer(on_cuda=True) == "adamw_8bit"
    assert cfg.resolved_optimizer(on_cuda=False) == "adamw_torch"
    assert RunConfig(optimizer="sgd").resolved_optimizer(True) == "sgd"
    assert RunConfig(batch_size=3, grad_accum=5).effective_batch == 15


def test_runs_default_to_a_folder_that_survives_the_session(tmp_path):
    from nbkit.config import auto_output_dir, default_output_root

    drive, kaggle = tmp_path / "drive", tmp_path / "kaggle"
    roots = ((str(drive), "nbkit-outputs"), (str(kaggle), "outputs"))
    assert default_output_root(roots) == "outputs"  # neither is there: the working folder
    kaggle.mkdir()
    assert default_output_root(roots) == str(kaggle / "outputs")
    drive.mkdir()  # Colab with Google Drive mounted wins
    assert default_output_root(roots) == str(drive / "nbkit-outputs")
    assert auto_output_dir("unsloth/Qwen3-8B", root=str(kaggle)).startswith(f"{kaggle}/Qwen3-8B-")
