"""What each RunConfig field becomes in TRL's SFTConfig, and `extra` checked against SFTConfig's own settings."""
from __future__ import annotations

import pytest

from nbkit import RunConfig
from nbkit.errors import ConfigError
from nbkit.loading.data import PreparedData
from nbkit.loading.models import LoadedModel
from nbkit.training.sft_args import check_extra, sft_config


def args_for(cfg: RunConfig, eval_rows=None, **overrides):
    return sft_config(LoadedModel(None, None, "transformers", "", cfg, False),
                      PreparedData(None, eval_rows, "alpaca", 0), **overrides)


def test_the_config_reaches_the_trainer(tmp_path):
    cfg = RunConfig(output_dir=str(tmp_path / "run"), batch_size=3, grad_accum=5, learning_rate=2e-4, max_steps=40,
                    warmup_steps=4, seed=7, max_seq_length=256, save_steps=10, save_total_limit=2)
    args = args_for(cfg)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.learning_rate) == (3, 5, 2e-4)
    assert (args.max_steps, args.warmup_steps, args.seed, args.data_seed) == (40, 4, 7, 7)
    assert (args.max_length, args.save_strategy, args.save_steps, args.save_total_limit) == (256, "steps", 10, 2)
    assert args.use_cpu and not args.bf16 and not args.fp16  # a model not on CUDA trains in float32 on the CPU
    assert args.eval_strategy == "no" and not args.packing  # no eval rows; packing is the trainer's to decide


def test_epochs_without_steps_eval_with_eval_rows_and_no_checkpoints(tmp_path):
    cfg = RunConfig(output_dir=str(tmp_path / "run"), max_steps=0, num_epochs=2, save_steps=0)
    args = args_for(cfg, eval_rows=["a row"])
    assert args.max_steps == -1 and args.num_train_epochs == 2 and args.save_strategy == "no"
    assert args.eval_strategy == "steps" and not args.eval_packing  # eval unpacked: its loss means the same
    assert args_for(cfg, packing=True).packing  # what the trainer decides is passed on


def test_extra_passes_sftconfig_settings_and_refuses_the_rest():
    assert check_extra({}) == {} and check_extra({"max_grad_norm": 0.5}) == {"max_grad_norm": 0.5}
    with pytest.raises(ConfigError, match="set by the RunConfig field 'learning_rate': set that field instead"):
        check_extra({"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="not an SFTConfig setting .*did you mean 'max_grad_norm'"):
        check_extra({"max_grad_nrom": 1.0})
