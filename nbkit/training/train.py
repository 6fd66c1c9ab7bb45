"""Build TRL's SFTTrainer from a RunConfig, run it under observation, and return what happened.

What the run does is published through nbkit.training.events (observers are passed in; this module knows no view).
A stop request ends it at a step boundary with a resumable checkpoint; an out-of-memory step is retried from
the last completed step with half the batch and twice the accumulation; a non-finite loss stops it unsaved.
"""
from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

from ..loading import backend, packing
from ..gpus import fsdp
from . import outputs, runs, tracking, trainer_wrappers
from ..loading.data import PreparedData
from ..errors import TrainingInterrupted
from .events import RunObserver, StopControl, as_events
from ..planning.hardware import is_oom
from ..loading.models import LoadedModel
from .results import StepTimer, TrainResult, result_from, synced_step_timer  # noqa: F401  (this module's API)
from .checkpoints import AtomicCheckpoints
from .train_failures import diverged, failed
from ..gpus.distributed import is_main
from .trainer_bridge import TokenCounter, bridge
from .warmup import ClippedWarmup
from ..loading.bnb_cpu import keep_trainable_layout


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


def _trainer_class(on_cuda: bool):
    from trl import SFTTrainer

    if on_cuda:
        return type("NbkitSFTTrainer", (ClippedWarmup, AtomicCheckpoints, SFTTrainer), {})
    from transformers import Trainer

    class CpuSFTTrainer(ClippedWarmup, AtomicCheckpoints, SFTTrainer):
        """TRL 1.15 computes the SFT loss with a Triton kernel that only runs on CUDA/XPU; on CPU use the
        model's own cross-entropy over the same completion-only labels (transformers' Trainer loss)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            fsdp.enable_on_cpu(self)  # shard on CPU as GPUs do (accelerate alone would fall back to DDP)

    return CpuSFTTrainer


def build_trainer(loaded: LoadedModel, data: PreparedData, callbacks=(), events: Any = None,
                  stop: StopControl | None = None, **overrides: Any):
    """The trainer for `loaded` on `data`; with `events`, observers watch it through the bridge
    (`trainer.nbkit_bridge`) and `stop` can end it at a step boundary."""
    backend.ensure(loaded.backend)
    packing.quiet_checked_warnings()
    plan = packing.for_run(loaded, data)
    # No data_collator of nbkit's own: the trainer builds the one raw Unsloth gets. A custom collator makes
    # Unsloth turn padding-free batching off and compile every transformer block for padded batches, which cost
    # ~18 s more on the first step (H100, 1B 4-bit) than raw Unsloth's padding-free run. The collator is wrapped
    # afterwards only to count tokens.
    trainer = _trainer_class(loaded.on_cuda)(
        model=loaded.model,
        processing_class=loaded.tokenizer,
        args=sft_config(loaded, data, **{"packing": plan.on, **overrides}),
        train_dataset=data.train,
        eval_dataset=data.eval,
        callbacks=[*callbacks, *tracking.callbacks(loaded.config)],  # the Hub checkpoint pusher, if asked
    )
    if loaded.on_cuda and loaded.gpu is not None and not loaded.gpu.bf16:
        _adapters_to_fp32(trainer.model)
    if not loaded.on_cuda:  # a model nbkit did not load may have been packed for inference (nbkit.loading.bnb_cpu)
        keep_trainable_layout(loaded.model, say=True)
    data.packing = packing.packed_by(trainer, plan)
    collator = trainer.data_collator = TokenCounter(trainer.data_collator)
    trainer.nbkit_token_counter = collator
    trainer.nbkit_bridge = None
    if events is not None:
        trainer.nbkit_bridge = bridge(as_events(events), stop, collator, loaded.config.save_minutes,
                                      packing=data.packing)
        trainer.add_callback(trainer.nbkit_bridge)
    # with tqdm off the trainer prints every log dict; the history stays in trainer.state.log_history
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def _adapters_to_fp32(model) -> None:
    """TRL stores a quantized model's LoRA adapters in bf16 (the QLoRA paper's choice). A card without bf16 (T4)
    trains in fp16 with a gradient scaler, which cannot unscale bf16 gradients: keep the adapters in fp32 there."""
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.float()


def run(loaded: LoadedModel, data: PreparedData, observers: Any = None, *, stop: StopControl | None = None,
        resume: bool = False, overwrite: bool = False, claim: bool = True, recover_oom: bool = True, callbacks=(),
        progress: RunObserver | None = None, **overrides: Any) -> TrainResult:
    """Train and return losses, speed and peak memory; the run folder records how it ended (nbkit.training.runs).

    `observers` (nbkit.training.events.RunObserver, e.g. nbkit.ui.progress.TrainingProgress) watch the run; `stop`
    lets any of them end it at a step boundary (the run is "stopped", resumable). Interrupting the kernel (or
    Ctrl-C, SIGTERM) also ends it at a step boundary with a checkpoint, then raises TrainingInterrupted, so a
    Run All stops there. `resume=True` continues from the newest complete checkpoint in the config's output_dir
    (a finished run only with a larger max_steps); `overwrite=True` replaces the run there.
    """
    events = as_events(observers)
    if progress:  # older spelling: one observer
        events.add(progress)
    stop = stop or StopControl()
    stop.events = events  # a StopControl kept across runs (the launcher's) tells this run's observers
    out = Path(overrides.get("output_dir") or loaded.config.output_dir)
    # the process that writes (rank 0 of a multi-GPU run) claims the folder and records the run's end
    claimed = claim and "output_dir" not in overrides and is_main()
    if claimed:
        runs.start_training(loaded.config, resume=resume, overwrite=overwrite)
    checkpoint, notes = _resume_point(out, resume)
    import torch

    if loaded.on_cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with stop.on_interrupt(), backend.library_bars_off():  # nbkit's observers show the run
        while True:
            trainer = hooks = None
            try:
                trainer = build_trainer(loaded, data, callbacks, events, stop, **overrides)
                hooks = trainer.nbkit_bridge
                trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
                break
            except BaseException as exc:
                # not when sharded: the other ranks are inside a collective, waiting for this one
                if (recover_oom and trainer is not None and is_oom(exc) and loaded.config.batch_size > 1
                        and "output_dir" not in overrides and not fsdp.sharded(loaded.config)):
                    checkpoint, note = _recover_from_oom(loaded, trainer, events)
                    notes.append(note)
                    continue
                trainer_wrappers.undo(loaded.model)
                raise failed(exc, loaded, trainer, events, out if claimed else None) from None
    # the model as it was loaded: generation after training runs its own forward, not the trainer's (trainer_wrappers)
    trainer_wrappers.undo(loaded.model)
    seconds = time.perf_counter() - start
    if hooks.diverged:
        exc = diverged(loaded, hooks.diverged, out)
        events.run_failed(exc)
        if claimed:
            runs.end(out, runs.DIVERGED, step=hooks.diverged[0], total=trainer.state.max_steps)
        raise exc
    result = result_from(trainer, seconds, loaded.on_cuda, hooks.marks)
    result.stopped, result.stop_reason = stop.requested, stop.reason
    result.resumed_from, result.notes = str(checkpoint) if checkpoint else None, notes
    result.state = runs.INTERRUPTED if stop.interrupted else runs.STOPPED if stop.requested else runs.FINISHED
    result.total = trainer.state.max_steps
    loaded.trained = runs.RunState(result.state, result.steps, result.total, str(out))
    if claimed:
        runs.end(out, result.state, step=result.steps, total=result.total)
    events.run_finished(result)
    if result.stopped:
        where = result.checkpoints[-1] if result.checkpoints else "no checkpoint"
        message = (f"{result.state} at step {result.steps}/{result.total} ({stop.reason}); resumable checkpoint: "
                   f"{where}. Continue with resume=True (CLI: --resume).")
        if stop.interrupted:  # the user interrupted a blocking cell: stop here, not in the cells after it
            raise TrainingInterrupted(f"Training {message}", result, loaded, where, stop.signal)
        print(f"nbkit: {message}")
    return result


def _resume_point(out: Path, resume: bool) -> tuple[Path | None, list[str]]:
    """The checkpoint a resumed run continues from (None: from the start), and what to say about it."""
    if not resume:
        return None, []
    checkpoint, skipped = outputs.newest_checkpoint(out)
    notes = []
    if skipped:
        notes.append(f"skipped incomplete checkpoint(s) {[p.name for p in skipped]} (written when the process "
                     "died)")
    notes.append(f"resumed from {checkpoint}" if checkpoint else "no complete checkpoint yet: started over")
    for note in notes:
        print(f"nbkit: {note}")
    return checkpoint, notes


def _recover_from_oom(loaded: LoadedModel, trainer, events) -> tuple[Path | None, str]:
    """Free the failed step, checkpoint the last completed one, and continue with half the batch and twice the
    accumulation: the same rows per optimizer step, in the same order."""
    import torch

    cfg = loaded.config
    trainer.model.zero_grad(set_to_none=True)
    gc.collect()
    if loaded.on_cuda:
        torch.cuda.empty_cache()
    checkpoint = None
    if trainer.state.global_step > 0:
        trainer._save_checkpoint(trainer.model, None)
        checkpoint = Path(cfg.output_dir) / f"checkpoint-{trainer.state.global_step}"
    new = cfg.replace(batch_size=cfg.batch_size // 2, grad_accum=cfg.grad_accum * 2)
    note = (f"out of GPU memory at step {trainer.state.global_step + 1} with batch {cfg.batch_size} × "
            f"{cfg.grad_accum}: continuing from step {trainer.state.global_step} with batch {new.batch_size} × "
            f"{new.grad_accum} (same effective batch {new.effective_batch})")
    loaded.config = new
    trainer.optimizer = trainer.lr_scheduler = None
    del trainer
    gc.collect()
    if loaded.on_cuda:
        torch.cuda.empty_cache()
    print(f"nbkit: {note}")
    events.phase_changed("recovering", note)
    return checkpoint, note
