"""Build TRL's SFTTrainer from a RunConfig, run it under observation, and return what happened.

What the run does is published through nbkit.events (observers are passed in; this module knows no view).
A stop request ends it at a step boundary with a resumable checkpoint; an out-of-memory step is retried from
the last completed step with half the batch and twice the accumulation; a non-finite loss stops it unsaved.
"""
from __future__ import annotations

import gc
import os
import shutil
import time
from pathlib import Path
from typing import Any

from . import backend, fsdp, outputs
from .data import PreparedData
from .errors import ExportError, HardwareError, NbkitError, TrainingDivergedError
from .events import RunObserver, StopControl, as_events
from .hardware import is_oom
from .models import LoadedModel
from .results import StepTimer, TrainResult, result_from, synced_step_timer  # noqa: F401  (this module's API)
from .trainer_bridge import TokenCounter, bridge


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
        report_to="none",
        bf16=bf16,
        fp16=on_cuda and not bf16,
        use_cpu=not on_cuda,
        max_length=cfg.max_seq_length,
        packing=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # LoRA uses every adapter each step; the search costs time
        disable_tqdm=True,  # nbkit's observers replace tqdm
        # model gradient checkpointing is set up at load time (Unsloth's or peft's)
        gradient_checkpointing=False,
    )
    if fsdp.sharded(cfg):
        kwargs.update(fsdp.trainer_args(cfg))
    kwargs.update(overrides)
    args = SFTConfig(**kwargs)
    if on_cuda and args.n_gpu > 1:
        # one process trains on its own GPU: with several visible the Trainer would wrap the model in
        # nn.DataParallel (which TRL refuses); several GPUs are used through torchrun or nbkit.parallel.launch
        args._n_gpu = 1
    return args


class _AtomicCheckpoints:
    """Checkpoints are written into a staging folder and renamed into place once complete, with nbkit's marker
    inside: a checkpoint half-written when the process died has no marker, and resume skips it. Rotation
    (save_total_limit) only ever deletes complete nbkit checkpoints."""

    def _save_checkpoint(self, model, trial):
        final_root = Path(self.args.output_dir)
        name = f"checkpoint-{self.state.global_step}"
        staging = final_root / f".nbkit-tmp-{name}"
        _warn_if_disk_is_short(final_root, self.model)
        self.args.output_dir = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError) as exc:  # disk full shows as OSError, or SafetensorError (a RuntimeError)
            shutil.rmtree(staging, ignore_errors=True)  # never a partial checkpoint
            last, _ = outputs.newest_checkpoint(final_root)
            raise ExportError(f"Could not write {name} in {final_root}: {exc}. Training stopped at step "
                              f"{self.state.global_step}; the model in memory is unharmed (save it with "
                              f"nbkit.export.save_lora). Free disk space, then resume: the newest complete "
                              f"checkpoint is {last or 'none yet'}.") from exc
        finally:
            self.args.output_dir = str(final_root)
        from .distributed import barrier

        barrier()  # every rank's RNG file is in before rank 0 renames the folder
        if not self.args.should_save:
            return
        outputs.write_text_atomic(staging / name / outputs.CHECKPOINT_MARKER,
                                  f'{{"step": {self.state.global_step}, "saved": "{time.strftime("%F %T")}"}}')
        target = final_root / name
        if target.exists():  # a resumed run re-saving a step: the old copy is nbkit's own
            shutil.rmtree(target)
        os.replace(staging / name, target)
        shutil.rmtree(staging, ignore_errors=True)
        limit = self.args.save_total_limit
        complete = [c for c in outputs.checkpoints(final_root) if outputs.is_complete(c)]
        for old in complete[:-limit] if limit else []:
            shutil.rmtree(old, ignore_errors=True)


_disk_warned: set[str] = set()


def _warn_if_disk_is_short(folder: Path, model) -> None:
    """Once per folder: say so before a checkpoint when free disk is under twice what one takes (the newest one
    on disk, else the adapters plus Adam's two states in fp32)."""
    newest, _ = outputs.newest_checkpoint(folder)
    if newest is not None:
        need = sum(p.stat().st_size for p in newest.rglob("*") if p.is_file()) / 1024**3
    else:
        need = 12 * sum(p.numel() for p in model.parameters() if p.requires_grad) / 1024**3
    free = outputs.free_gib(folder)
    if free < 2 * need and str(folder) not in _disk_warned:
        _disk_warned.add(str(folder))
        print(f"nbkit: warning: {free:.2f} GiB free where checkpoints go ({folder}); one takes about {need:.2f} "
              "GiB. Free disk space or lower save_total_limit before the disk fills.")


def _trainer_class(on_cuda: bool):
    from trl import SFTTrainer

    if on_cuda:
        return type("NbkitSFTTrainer", (_AtomicCheckpoints, SFTTrainer), {})
    from transformers import Trainer

    class CpuSFTTrainer(_AtomicCheckpoints, SFTTrainer):
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
    # No data_collator of nbkit's own: the trainer builds the one raw Unsloth gets. A custom collator makes
    # Unsloth turn padding-free batching off and compile every transformer block for padded batches, which cost
    # ~18 s more on the first step (H100, 1B 4-bit) than raw Unsloth's padding-free run. The collator is wrapped
    # afterwards only to count tokens.
    trainer = _trainer_class(loaded.on_cuda)(
        model=loaded.model,
        processing_class=loaded.tokenizer,
        args=sft_config(loaded, data, **overrides),
        train_dataset=data.train,
        eval_dataset=data.eval,
        callbacks=list(callbacks),
    )
    if loaded.on_cuda and loaded.gpu is not None and not loaded.gpu.bf16:
        _adapters_to_fp32(trainer.model)
    collator = trainer.data_collator = TokenCounter(trainer.data_collator)
    trainer.nbkit_token_counter = collator
    trainer.nbkit_bridge = None
    if events is not None:
        trainer.nbkit_bridge = bridge(as_events(events), stop, collator, loaded.config.save_minutes)
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
        resume: bool = False, claim: bool = True, recover_oom: bool = True, callbacks=(),
        progress: RunObserver | None = None, **overrides: Any) -> TrainResult:
    """Train and return losses, speed and peak memory.

    `observers` (nbkit.events.RunObserver, e.g. nbkit.ui.progress.TrainingProgress) watch the run; `stop`
    lets any of them (or Ctrl-C) end it at a step boundary. `resume=True` continues from the newest complete
    checkpoint in the config's output_dir. `claim=False` when the caller (workflow.run) already claimed it.
    """
    events = as_events(observers)
    if progress:  # older spelling: one observer
        events.add(progress)
    stop = stop or StopControl()
    stop.events = events  # a StopControl kept across runs (the launcher's) tells this run's observers
    out = Path(overrides.get("output_dir") or loaded.config.output_dir)
    if claim and "output_dir" not in overrides:
        outputs.claim(loaded.config, resume=resume)
    checkpoint = None
    notes: list[str] = []
    if resume:
        checkpoint, skipped = outputs.newest_checkpoint(out)
        if skipped:
            notes.append(f"skipped incomplete checkpoint(s) {[p.name for p in skipped]} (written when the "
                         "process died)")
        notes.append(f"resumed from {checkpoint}" if checkpoint else "no complete checkpoint yet: started over")
        for note in notes:
            print(f"nbkit: {note}")
    resumed_from = str(checkpoint) if checkpoint else None
    import torch

    if loaded.on_cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with stop.on_interrupt():
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
                exc = _translate(exc, loaded)
                events.run_failed(exc)
                if isinstance(exc, NbkitError):  # the user's to act on: its message says what to do
                    raise exc from None
                raise
    seconds = time.perf_counter() - start
    if hooks.diverged:
        exc = _diverged(loaded, hooks.diverged, out)
        events.run_failed(exc)
        raise exc
    result = result_from(trainer, seconds, loaded.on_cuda, hooks.marks)
    result.stopped, result.stop_reason = stop.requested, stop.reason
    result.resumed_from, result.notes = resumed_from, notes
    if result.stopped:
        where = result.checkpoints[-1] if result.checkpoints else "no checkpoint"
        print(f"nbkit: stopped at step {result.steps} ({stop.reason}); resumable checkpoint: {where}. "
              "Continue with resume=True (CLI: --resume).")
    events.run_finished(result)
    return result


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


def _translate(exc: BaseException, loaded: LoadedModel) -> BaseException:
    if is_oom(exc):
        cfg = loaded.config
        return HardwareError(
            f"Out of GPU memory at batch {cfg.batch_size} × {cfg.max_seq_length} tokens. Use "
            f"batch_size={max(1, cfg.batch_size // 2)} with grad_accum={cfg.grad_accum * 2} (same effective "
            f"batch), a shorter max_seq_length, or quantization='4bit'.")
    return exc


def _diverged(loaded: LoadedModel, where: tuple[int, str], out: Path) -> TrainingDivergedError:
    step, what = where
    good, _ = outputs.newest_checkpoint(out)
    last = f"The last good checkpoint is {good}." if good else "No checkpoint was saved before it."
    err = TrainingDivergedError(
        f"Training diverged at step {step}: {what}. The likely cause is a learning rate too high for this model "
        f"(learning_rate={loaded.config.learning_rate:g}; LoRA usually trains well at 1e-4 to 3e-4). Nothing "
        f"non-finite was saved. {last}")
    err.step, err.checkpoint = step, str(good) if good else None
    return err
