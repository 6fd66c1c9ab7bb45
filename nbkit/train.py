"""Build TRL's SFTTrainer from a RunConfig, run it, and return what happened."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import backend
from .data import PreparedData
from .errors import HardwareError
from .models import LoadedModel


def _step_marks(counter: "TokenCounter"):
    """A callback noting (host time, tokens) at each step's end. No GPU sync of its own: the trainer's per-step
    loss logging already waits for the GPU, so over several steps the host clock tracks the GPU's."""
    from transformers import TrainerCallback

    class StepMarks(TrainerCallback):
        def __init__(self):
            self.start = time.perf_counter()
            self.marks: list[tuple[float, int]] = []

        def on_train_begin(self, *args, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            self.marks.append((time.perf_counter() - self.start, counter.tokens))

    return StepMarks()


def synced_step_timer(warmup: int = 2):
    """A callback timing each optimizer step with a CUDA sync on both ends: exact step times, for measuring
    (the probe, the benchmarks), never for ordinary training. `steady()` is the median after the first `warmup`
    steps, which include compilation; None until there is such a step."""
    import statistics

    import torch
    from transformers import TrainerCallback

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self._t = 0.0

        def on_step_begin(self, *args, **kwargs):
            sync()
            self._t = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            sync()
            self.times.append(time.perf_counter() - self._t)

        def steady(self) -> float | None:
            rest = self.times[warmup:]
            return statistics.median(rest) if rest else None

    return StepTimer()


class TokenCounter:
    """Wraps the data collator to count real (non-padding) tokens on the CPU side: no GPU sync needed."""

    def __init__(self, collator):
        self.collator = collator
        self.tokens = 0

    def __call__(self, examples):
        self.tokens += sum(len(ex["input_ids"]) for ex in examples)
        return self.collator(examples)


@dataclass
class TrainResult:
    steps: int
    losses: list[tuple[int, float]]
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    tokens: int = 0
    peak_vram_gib: float | None = None
    output_dir: str = ""
    checkpoints: list[str] = field(default_factory=list)
    # (seconds since start, tokens so far) at each optimizer step's end, for speed after warm-up
    step_marks: list[tuple[float, int]] = field(default_factory=list)

    @property
    def tokens_per_second(self) -> float:
        """Over the whole run, first-step compilation included: what the wall clock saw."""
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    def steady_tokens_per_second(self, warmup: int = 2) -> float | None:
        """After the first `warmup` steps (compilation, allocator growth): the speed a longer run settles at.
        None when the run had too few steps to tell."""
        if len(self.step_marks) < warmup + 2:
            return None
        (t0, n0), (t1, n1) = self.step_marks[warmup], self.step_marks[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None

    @property
    def first_loss(self) -> float:
        return self.losses[0][1]

    @property
    def final_loss(self) -> float:
        return self.losses[-1][1]

    def summary(self) -> str:
        peak = f", peak VRAM {self.peak_vram_gib:.2f} GiB" if self.peak_vram_gib is not None else ""
        steady = self.steady_tokens_per_second()
        after = (f" ({steady:,.0f} after warm-up)" if steady and abs(steady - self.tokens_per_second)
                 > 0.1 * self.tokens_per_second else "")
        return (f"{self.steps} steps in {self.train_seconds:.1f} s, loss {self.first_loss:.3f} → "
                f"{self.final_loss:.3f}, {self.tokens_per_second:,.0f} tokens/s{after}{peak}")


def sft_config(loaded: LoadedModel, data: PreparedData, **overrides: Any):
    from trl import SFTConfig

    cfg = loaded.config
    on_cuda = loaded.on_cuda
    bf16 = False
    if on_cuda:
        import torch

        bf16 = torch.cuda.is_bf16_supported()
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
        optim=cfg.resolved_optimizer(on_cuda),
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
        disable_tqdm=True,  # the progress display replaces tqdm
        # model gradient checkpointing is set up at load time (Unsloth's or peft's)
        gradient_checkpointing=False,
    )
    kwargs.update(overrides)
    return SFTConfig(**kwargs)


def _trainer_class(on_cuda: bool):
    from trl import SFTTrainer

    if on_cuda:
        return SFTTrainer
    from transformers import Trainer

    class CpuSFTTrainer(SFTTrainer):
        """TRL 1.15 computes the SFT loss with a Triton kernel that only runs on CUDA/XPU; on CPU use the
        model's own cross-entropy over the same completion-only labels (transformers' Trainer loss)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return CpuSFTTrainer


def build_trainer(loaded: LoadedModel, data: PreparedData, callbacks=(), **overrides: Any):
    backend.ensure(loaded.backend)
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = TokenCounter(DataCollatorForLanguageModeling(pad_token_id=loaded.tokenizer.pad_token_id))
    trainer = _trainer_class(loaded.on_cuda)(
        model=loaded.model,
        processing_class=loaded.tokenizer,
        args=sft_config(loaded, data, **overrides),
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=collator,
        callbacks=list(callbacks),
    )
    trainer.nbkit_token_counter = collator
    trainer.nbkit_step_marks = _step_marks(collator)
    trainer.add_callback(trainer.nbkit_step_marks)
    for cb in callbacks:
        if hasattr(cb, "attach"):
            cb.attach(collator)
    # with tqdm off the trainer prints every log dict; the history stays in trainer.state.log_history
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def run(loaded: LoadedModel, data: PreparedData, callbacks=(), progress: bool | Any = True,
        **overrides: Any) -> TrainResult:
    """Train and return losses, speed and peak memory. `progress=True` shows nbkit's progress display."""
    callbacks = list(callbacks)
    if progress is True:
        from .ui.progress import TrainingProgress

        callbacks.append(TrainingProgress())
    elif progress:
        callbacks.append(progress)
    trainer = build_trainer(loaded, data, callbacks, **overrides)
    import torch

    if loaded.on_cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        trainer.train()
    except BaseException as exc:
        if isinstance(exc, torch.OutOfMemoryError):
            cfg = loaded.config
            exc = HardwareError(
                f"Out of GPU memory at batch {cfg.batch_size} × {cfg.max_seq_length} tokens. Use "
                f"batch_size={max(1, cfg.batch_size // 2)} with grad_accum={cfg.grad_accum * 2} (same effective "
                f"batch), a shorter max_seq_length, or quantization='4bit'. Restart the kernel to free the memory."
            )
        for cb in callbacks:
            if hasattr(cb, "fail"):
                cb.fail(exc)
        if isinstance(exc, HardwareError):
            raise exc from None
        raise
    seconds = time.perf_counter() - start
    return result_from(trainer, seconds, loaded.on_cuda)


def result_from(trainer, seconds: float, on_cuda: bool) -> TrainResult:
    history = trainer.state.log_history
    losses = [(h["step"], float(h["loss"])) for h in history if "loss" in h]
    evals = [(h["step"], float(h["eval_loss"])) for h in history if "eval_loss" in h]
    peak = None
    if on_cuda:
        import torch

        peak = torch.cuda.max_memory_reserved() / 1024**3
    out = Path(trainer.args.output_dir)
    checkpoints = sorted(str(p) for p in out.glob("checkpoint-*")) if out.exists() else []
    return TrainResult(
        steps=trainer.state.global_step, losses=losses, eval_losses=evals, train_seconds=seconds,
        tokens=trainer.nbkit_token_counter.tokens, peak_vram_gib=peak, output_dir=str(out),
        checkpoints=checkpoints, step_marks=list(trainer.nbkit_step_marks.marks),
    )
