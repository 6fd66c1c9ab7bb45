"""Build TRL's SFTTrainer from a RunConfig, run it under observation, and return what happened.

What the run does is published through nbkit.training.events (observers are passed in; this module knows no view).
A stop request ends it at a step boundary with a resumable checkpoint; an out-of-memory step is retried from
the last completed step with half the batch and twice the accumulation; a non-finite loss stops it unsaved.
"""
from __future__ import annotations

import dataclasses
import gc
import time
from pathlib import Path
from typing import Any

from ..errors import TrainingInterrupted
from ..gpus import fsdp
from ..gpus.distributed import is_main
from ..loading import backend, packing
from ..loading.bnb_cpu import keep_trainable_layout
from ..loading.data import PreparedData
from ..loading.models import LoadedModel
from ..planning.hardware import is_oom
from . import outputs, runs, tracking, trainer_wrappers
from .checkpoints import AtomicCheckpoints
from .events import RunEvents, RunObserver, StopControl, as_events
from .results import StepTimer, TrainResult, result_from, synced_step_timer  # noqa: F401  (this module's API)
from .sft_args import check_extra, sft_config  # noqa: F401  (this module's API: the workflow checks `extra`)
from .train_failures import diverged, failed
from .trainer_bridge import TokenCounter, TrainerBridge
from .warmup import ClippedWarmup


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
    (`trainer.nbkit_bridge`) and `stop` can end it at a step boundary. What an epoch holds, packed or not, is
    `trainer.nbkit_packing` (nbkit.loading.packing.PackingPlan)."""
    backend.ensure(loaded.backend)
    packing.quiet_checked_warnings()
    plan = packing.for_run(loaded, data)
    trainer = _sft_trainer(loaded, data, plan, callbacks, overrides)
    _keep_trainable(loaded, trainer.model)
    trainer.nbkit_packing = packing.packed_by(trainer, plan)
    trainer.data_collator = trainer.nbkit_token_counter = TokenCounter(trainer.data_collator)
    trainer.nbkit_bridge = _watched_by(trainer, events, stop, loaded.config.save_minutes)
    return trainer


def _sft_trainer(loaded: LoadedModel, data: PreparedData, plan, callbacks, overrides: dict):
    # No data_collator of nbkit's own: the trainer builds the one raw Unsloth gets. A custom collator makes
    # Unsloth turn padding-free batching off and compile every transformer block for padded batches, which cost
    # ~18 s more on the first step (H100, 1B 4-bit) than raw Unsloth's padding-free run. The collator is wrapped
    # afterwards only to count tokens (TokenCounter).
    return _trainer_class(loaded.on_cuda)(
        model=loaded.model,
        processing_class=loaded.tokenizer,
        args=sft_config(loaded, data, **{"packing": plan.on, **overrides}),
        train_dataset=data.train,
        eval_dataset=data.eval,
        callbacks=[*callbacks, *tracking.callbacks(loaded.config)],  # the Hub checkpoint pusher, if asked
    )


def _keep_trainable(loaded: LoadedModel, model) -> None:
    if loaded.on_cuda and loaded.gpu is not None and not loaded.gpu.bf16:
        _adapters_to_fp32(model)
    if not loaded.on_cuda:  # a model nbkit did not load may have been packed for inference (nbkit.loading.bnb_cpu)
        keep_trainable_layout(loaded.model, say=True)


def _watched_by(trainer, events: Any, stop: StopControl | None, save_minutes: float) -> TrainerBridge | None:
    """The bridge that publishes the run to `events` (None without them)."""
    # with tqdm off the trainer prints every log dict; the history stays in trainer.state.log_history
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    if events is None:
        return None
    hooks = TrainerBridge(as_events(events), stop, trainer.nbkit_token_counter, save_minutes,
                          packing=trainer.nbkit_packing)
    trainer.add_callback(hooks)
    return hooks


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
    events, stop = _watching(observers, progress, stop)
    out = Path(overrides.get("output_dir") or loaded.config.output_dir)
    folder = _claimed(loaded, out, claim and "output_dir" not in overrides, resume, overwrite)
    checkpoint, notes = _resume_point(out, resume)
    start = _clock_started(loaded.on_cuda)
    # a stop asked while training is told to this run's observers; nbkit's observers show the run
    with stop.on_interrupt(), stop.telling(events), backend.library_bars_off():
        trainer, checkpoint, recovered = _trained(loaded, data, events, stop, checkpoint, folder, recover_oom,
                                                  callbacks, overrides)
    # the model as it was loaded: generation after training runs its own forward, not the trainer's (trainer_wrappers)
    trainer_wrappers.undo(loaded.model)
    seconds = time.perf_counter() - start
    _fail_if_diverged(trainer, loaded, events, out, folder)
    result = _assembled(trainer, seconds, loaded.on_cuda, stop, checkpoint, notes + recovered)
    return _ended(result, loaded, stop, events, out, folder)


def _watching(observers: Any, progress: RunObserver | None, stop: StopControl | None):
    """The run's events (`progress`: the older spelling of one observer) and its stop control."""
    events = as_events(observers)
    if progress:
        events = RunEvents([*events.observers, progress])
    return events, stop or StopControl()


def _claimed(loaded: LoadedModel, out: Path, claim: bool, resume: bool, overwrite: bool) -> Path | None:
    """The folder this process records the run in: the process that writes (rank 0 of a multi-GPU run) claims
    it and records the run's end; None where this process records nothing."""
    if not (claim and is_main()):
        return None
    runs.start_training(loaded.config, resume=resume, overwrite=overwrite)
    return out


def _clock_started(on_cuda: bool) -> float:
    """The run's start: its speed and its peak memory count from here."""
    if on_cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    return time.perf_counter()


def _trained(loaded: LoadedModel, data: PreparedData, events: RunEvents, stop: StopControl, checkpoint,
             folder: Path | None, recover_oom: bool, callbacks, overrides: dict):
    """The trainer once it has trained, the checkpoint it last started from, and the notes of each out-of-memory
    step recovered on the way (_recover_from_oom). Any other failure is recorded and raised (train_failures)."""
    notes: list[str] = []
    while True:
        trainer = None
        try:
            trainer = build_trainer(loaded, data, callbacks, events, stop, **overrides)
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            return trainer, checkpoint, notes
        except BaseException as exc:
            if recover_oom and _recoverable(exc, loaded, trainer, overrides):
                checkpoint, note = _recover_from_oom(loaded, trainer, events)
                notes.append(note)
                continue
            trainer_wrappers.undo(loaded.model)
            raise failed(exc, loaded, trainer, events, folder) from None


def _recoverable(exc: BaseException, loaded: LoadedModel, trainer, overrides: dict) -> bool:
    """An out-of-memory step that a smaller batch can retry: not when sharded (the other ranks are inside a
    collective, waiting for this one), nor for a probe's trainer (its own output_dir)."""
    return (trainer is not None and is_oom(exc) and loaded.config.batch_size > 1 and "output_dir" not in overrides
            and not fsdp.sharded(loaded.config))


def _fail_if_diverged(trainer, loaded: LoadedModel, events: RunEvents, out: Path, folder: Path | None) -> None:
    """A loss or gradient that stopped being finite ends the run unsaved: recorded, told, raised."""
    where = trainer.nbkit_bridge.diverged
    if not where:
        return
    exc = diverged(loaded, where, out)
    events.run_failed(exc)
    if folder:
        runs.end(folder, runs.DIVERGED, step=where[0], total=trainer.state.max_steps)
    raise exc


def _assembled(trainer, seconds: float, on_cuda: bool, stop: StopControl, checkpoint, notes: list[str]) -> TrainResult:
    """What the run did (nbkit.training.results), with how it ended and where it started from."""
    state = runs.INTERRUPTED if stop.interrupted else runs.STOPPED if stop.requested else runs.FINISHED
    return dataclasses.replace(
        result_from(trainer, seconds, on_cuda, trainer.nbkit_bridge.marks), stopped=stop.requested,
        stop_reason=stop.reason, resumed_from=str(checkpoint) if checkpoint else None, notes=notes, state=state,
        total=trainer.state.max_steps, packing=trainer.nbkit_packing)


def _ended(result: TrainResult, loaded: LoadedModel, stop: StopControl, events: RunEvents, out: Path,
           folder: Path | None) -> TrainResult:
    """The run's end recorded (the folder, the model's state) and told; a stopped run says how to continue, and
    an interrupted one raises TrainingInterrupted so that a Run All stops there."""
    loaded.trained = runs.RunState(result.state, result.steps, result.total, str(out))
    if folder:
        runs.end(folder, result.state, step=result.steps, total=result.total)
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
