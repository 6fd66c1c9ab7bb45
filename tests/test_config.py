import pytest

from pathlib import Path

from nbkit import ConfigError, RunConfig
from nbkit.planning.config import auto_output_dir


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
    from nbkit.planning.config import auto_output_dir, default_output_root

    drive, kaggle = tmp_path / "drive", tmp_path / "kaggle"
    roots = ((str(drive), "nbkit-outputs"), (str(kaggle), "outputs"))
    assert default_output_root(roots) == "outputs"  # neither is there: the working folder
    kaggle.mkdir()
    assert default_output_root(roots) == str(kaggle / "outputs")
    drive.mkdir()  # Colab with Google Drive mounted wins
    assert default_output_root(roots) == str(drive / "nbkit-outputs")
    assert auto_output_dir("unsloth/Qwen3-8B", root=str(kaggle)).startswith(f"{kaggle}/Qwen3-8B-")


@pytest.mark.parametrize("changes", [
    {"warmup_steps": 0}, {"weight_decay": 0.0}, {"save_steps": 0}, {"save_minutes": 0}, {"save_total_limit": 1},
    {"max_steps": 0, "num_epochs": 1.0}, {"eval_fraction": 0.0}, {"lora_dropout": 0.0}, {"max_samples": 1},
])
def test_the_edges_that_are_allowed(changes):
    """Zero where zero means "none" is valid (mutation testing showed these boundaries unguarded)."""
    cfg = RunConfig(**changes)
    assert all(getattr(cfg, k) == v for k, v in changes.items())


@pytest.mark.parametrize("written, meant", [("true", True), ("Yes", True), ("1", True), (" ON ", True),
                                            ("false", False), ("no", False), ("0", False), ("OFF", False),
                                            (1, True), (0, False)])
def test_gradient_checkpointing_as_people_write_it(written, meant):
    assert RunConfig(gradient_checkpointing=written).gradient_checkpointing is meant


def test_numbers_as_people_write_them():
    cfg = RunConfig(learning_rate="2e-4", batch_size="8", max_steps=8.0, lora_r="1_6")
    assert (cfg.learning_rate, cfg.batch_size, cfg.max_steps, cfg.lora_r) == (2e-4, 8, 8, 16)
    assert type(cfg.batch_size) is int and type(cfg.learning_rate) is float
    with pytest.raises(ConfigError, match=r"batch_size=2.5 must be a whole number"):
        RunConfig(batch_size=2.5)
    with pytest.raises(ConfigError, match="learning_rate=True must be a number, not true/false"):
        RunConfig(learning_rate=True)
    with pytest.raises(ConfigError, match="learning_rate=inf"):
        RunConfig(learning_rate=float("inf"))


def test_a_run_folder_is_named_after_the_model_and_never_reused(tmp_path, monkeypatch):

    monkeypatch.setattr(__import__("time"), "strftime", lambda fmt: "20261125-120000")
    first = auto_output_dir("unsloth/Llama-3.2-1B-Instruct", root=tmp_path)
    assert Path(first).parent == tmp_path and Path(first).name.startswith("Llama-3.2-1B-Instruct-20")
    Path(first).mkdir()
    second = auto_output_dir("unsloth/Llama-3.2-1B-Instruct", root=tmp_path)
    assert second != first and not Path(second).exists()
    assert Path(auto_output_dir("///", root=tmp_path)).name.startswith("run-")


def test_boundaries_and_helpers_mutation_testing_found_unguarded(tmp_path):
    assert Path(RunConfig(output_dir="").output_dir).parent.name == "outputs"  # empty: a fresh folder of its own
    assert RunConfig(output_dir=None).output_dir  # None from a YAML file: the same
    assert RunConfig(max_seq_length=16).max_seq_length == 16
    for bad in ({"eval_fraction": 0.5}, {"weight_decay": 1.0}, {"save_minutes": -1}, {"warmup_steps": -1},
                {"save_total_limit": -1}, {"max_seq_length": 15}, {"gradient_checkpointing": 2},
                {"lora_r": True}, {"grad_accum": 0}, {"lora_alpha": 0}):
        with pytest.raises(ConfigError):
            RunConfig(**bad)
    assert RunConfig(max_steps=1, num_epochs=0).max_steps == 1
    cfg = RunConfig(batch_size=2, grad_accum=3)
    assert cfg.global_batch() == 6 and cfg.global_batch(4) == 24
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"batch_sise": 2, "zzz": 1})
    assert "(did you mean 'batch_sise' → 'batch_size'?)" in str(err.value)
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({"zzz": 1})
    assert "did you mean" not in str(err.value)


def test_save_writes_readable_files_in_new_folders(tmp_path):
    cfg = RunConfig(learning_rate=1e-4, output_dir=str(tmp_path / "o"))
    as_json = cfg.save(tmp_path / "a" / "b" / "run.json")
    assert as_json.read_text().startswith('{\n  "model"')  # indented, fields in their order
    as_yaml = cfg.save(tmp_path / "c" / "run.yml")
    assert as_yaml.read_text().startswith("model:") and RunConfig.load(as_yaml) == cfg
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad.json is not valid JSON: .*"):
        RunConfig.load(bad)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("a: [1,\n  b")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML: [^\n]*$"):
        RunConfig.load(bad_yaml)


def test_run_folders_count_up(tmp_path, monkeypatch):

    monkeypatch.setattr(__import__("time"), "strftime", lambda fmt: "20261125-120000")  # one second throughout
    first = auto_output_dir("org/My Model/", root=tmp_path)
    assert Path(first).name.startswith("My-Model-")
    Path(first).mkdir()
    second = auto_output_dir("org/My Model/", root=tmp_path)
    assert second == f"{first}-2"
    Path(second).mkdir()
    assert auto_output_dir("org/My Model/", root=tmp_path) == f"{first}-3"


@pytest.mark.parametrize("field, written, read", [("quantization", "FP8", "fp8"), ("quantization", " 4Bit", "4bit"),
                                                  ("backend", "Auto", "auto"), ("dataset_format", "Alpaca", "alpaca"),
                                                  ("optimizer", "ADAMW_TORCH", "adamw_torch")])
def test_choices_are_read_whatever_their_case(field, written, read):
    assert getattr(RunConfig(**{field: written}), field) == read


def test_extra_reaches_the_trainer_and_is_checked(tmp_path):
    """`extra` passes SFTConfig settings as they are; a misspelt one, or one a RunConfig field sets, is refused."""
    from nbkit.loading.data import PreparedData
    from nbkit.loading.models import LoadedModel
    from nbkit.training.train import sft_config

    cfg = RunConfig(output_dir=str(tmp_path / "run"), extra={"max_grad_norm": 0.5, "logging_first_step": True})
    args = sft_config(LoadedModel(None, None, "transformers", "", cfg, False), PreparedData(None, None, "alpaca", 0))
    assert args.max_grad_norm == 0.5 and args.logging_first_step is True
    for extra, message in (({"max_grad_nrom": 1}, "did you mean 'max_grad_norm'"),
                           ({"max_length": 64}, "set by the RunConfig field 'max_seq_length'")):
        with pytest.raises(ConfigError, match=message):
            sft_config(LoadedModel(None, None, "transformers", "", cfg.replace(extra=extra), False),
                       PreparedData(None, None, "alpaca", 0))


def test_a_length_beyond_the_models_context_is_said(tmp_path, tiny_dir, capsys):
    from nbkit.loading import models

    models.load(RunConfig(quantization="16bit", max_seq_length=100000, output_dir=str(tmp_path / "run")))
    assert "max_seq_length=100000 is beyond the 2048 tokens nbkit/tiny-llama was trained for" in capsys.readouterr().out


def test_report_to_and_hub_checkpoints_reach_the_trainer_and_are_checked(tmp_path):
    """report_to goes to the trainer as it is (default "none": nothing leaves the run folder); hub_checkpoints is a
    repo id; both may change when a run is resumed."""
    from nbkit.loading.data import PreparedData
    from nbkit.loading.models import LoadedModel
    from nbkit.training.runs import RESUMABLE_CHANGES
    from nbkit.training.train import sft_config

    def args(cfg):
        return sft_config(LoadedModel(None, None, "transformers", "", cfg, False), PreparedData(None, None, "alpaca", 0))

    cfg = RunConfig(output_dir=str(tmp_path / "run"))
    assert cfg.report_to == "none" and args(cfg).report_to == []
    tracked = args(cfg.replace(report_to="TensorBoard"))
    assert tracked.report_to == ["tensorboard"] and tracked.run_name == "run"
    assert not tracked.push_to_hub  # checkpoints go to the Hub through nbkit's own callback, after the rename
    with pytest.raises(ConfigError, match="Unknown report_to 'mlflow'"):
        RunConfig(report_to="mlflow")
    with pytest.raises(ConfigError, match="not a Hub repo id"):
        RunConfig(hub_checkpoints="alice/my run")
    assert RunConfig(hub_checkpoints="alice/ckpts").hub_checkpoints == "alice/ckpts"
    with pytest.raises(ConfigError, match="set by the RunConfig field 'report_to'"):
        args(cfg.replace(extra={"report_to": "wandb"}))
    assert {"report_to", "hub_checkpoints"} <= RESUMABLE_CHANGES
