"""The trainer's settings (TRL's SFTConfig) from a RunConfig, and `RunConfig.extra` checked against them.

Apart from the trainer itself (nbkit.training.train) because what each RunConfig field becomes in SFTConfig, and
which SFTConfig settings `extra` may pass as they are, is a table of its own that the workflow checks before
anything loads.
"""
from __future__ import annotations

from typing import Any

from ..gpus import fsdp
from ..loading.data import PreparedData
from ..loading.models import LoadedModel
from . import tracking


def sft_config(loaded: LoadedModel, data: PreparedData, **overrides: Any):
    from trl import SFTConfig

    cfg = loaded.config
    on_cuda = loaded.on_cuda
    bf16 = False
    if on_cuda:
        import torch

        # the loaded-for card decides: a rehearsed T4 trains in fp16 like a real one
        bf16 = loaded.gpu.bf16 if loaded.gpu is not None else torch.cuda.is_bf16_supported()
    kwargs: dict[str, Any] = dict(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        num_train_epochs=cfg.num_epochs,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type="linear",
        optim=cfg.resolved_optimizer(on_cuda, sharded=fsdp.sharded(cfg)),
        weight_decay=cfg.weight_decay,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=1,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit or None,
        eval_strategy="steps" if data.eval is not None else "no",
        eval_steps=max(1, cfg.max_steps // 5) if cfg.max_steps > 0 else None,
        bf16=bf16,
        fp16=on_cuda and not bf16,
        use_cpu=not on_cuda,
        max_length=cfg.max_seq_length,
        # build_trainer decides packing (nbkit.loading.packing): rows packed whole (never cut), each attending to itself;
        # eval unpacked, so its loss means the same with packing on or off
        packing=False,
        packing_strategy="bfd",
        eval_packing=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # LoRA uses every adapter each step; the search costs time
        disable_tqdm=True,  # nbkit's observers replace tqdm
        # model gradient checkpointing is set up at load time (Unsloth's or peft's)
        gradient_checkpointing=False,
    )
    kwargs.update(tracking.trainer_args(cfg))  # report_to "none" unless the config names a tracker
    if fsdp.sharded(cfg):
        kwargs.update(fsdp.trainer_args(cfg))
    kwargs.update(check_extra(cfg.extra))
    kwargs.update(overrides)
    args = SFTConfig(**kwargs)
    if on_cuda and args.n_gpu > 1:
        # one process trains on its own GPU: with several visible the Trainer would wrap the model in
        # nn.DataParallel (which TRL refuses); several GPUs are used through torchrun or nbkit.workflow.run_parallel
        args._n_gpu = 1
    return args


# what nbkit itself sets from a RunConfig field: an `extra` entry for these would silently fight that field
_FROM_FIELDS = {"output_dir": "output_dir", "per_device_train_batch_size": "batch_size", "learning_rate":
                "learning_rate", "gradient_accumulation_steps": "grad_accum", "max_steps": "max_steps",
                "num_train_epochs": "num_epochs", "warmup_steps": "warmup_steps", "seed": "seed", "max_length":
                "max_seq_length", "weight_decay": "weight_decay", "optim": "optimizer", "save_steps": "save_steps",
                "save_total_limit": "save_total_limit", "packing": "packing", "report_to": "report_to",
                "hub_model_id": "hub_checkpoints"}


def check_extra(extra: dict) -> dict:
    """`RunConfig.extra`, checked: SFTConfig fields only, none that a RunConfig field already sets."""
    if not extra:
        return {}
    import dataclasses

    from trl import SFTConfig

    from ..errors import ConfigError

    known = {f.name for f in dataclasses.fields(SFTConfig)}
    for key in extra:
        if key in _FROM_FIELDS:
            raise ConfigError(f"extra={{{key!r}: ...}} is set by the RunConfig field {_FROM_FIELDS[key]!r}: set that "
                              "field instead.")
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"extra={{{key!r}: ...}} is not an SFTConfig setting (TRL)"
                              + (f"; did you mean {close[0]!r}?" if close else ".") + " extra passes settings to the "
                              "trainer as they are.")
    return dict(extra)
