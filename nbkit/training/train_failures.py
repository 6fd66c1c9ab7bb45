"""How a training run ends badly, told the user's way and recorded in its folder: a second interrupt mid-step, a
checkpoint the disk could not take (the adapters are rescued), running out of GPU memory, a loss that stopped
being finite."""
from __future__ import annotations

from pathlib import Path

from . import outputs, runs
from ..errors import ExportError, HardwareError, NbkitError, TrainingDivergedError, TrainingInterrupted
from ..planning.hardware import is_oom
from ..loading.models import LoadedModel


def failed(exc: BaseException, loaded: LoadedModel, trainer, events, folder: Path | None) -> BaseException:
    """The error to raise for a run that ended on `exc`, recorded in its folder: a second interrupt (at once,
    mid-step) is an interrupt; a checkpoint the disk could not take keeps the adapters in a rescue folder."""
    step = trainer.state.global_step if trainer is not None else 0
    total = trainer.state.max_steps if trainer is not None else None
    if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, TrainingInterrupted):
        last, _ = outputs.newest_checkpoint(folder) if folder else (None, [])
        exc = TrainingInterrupted(f"Training interrupted at once, during step {step + 1}: that step is not saved. "
                                  f"The newest complete checkpoint is {last or 'none yet'}; continue with "
                                  "resume=True (CLI: --resume).", None, loaded, last)
        loaded.trained = runs.RunState(runs.INTERRUPTED, step, total, str(folder or ""))
        if folder:
            runs.end(folder, runs.INTERRUPTED, step=step, total=total)
    else:
        exc = translate(exc, loaded)
        if getattr(exc, "checkpoint_failed", False):
            exc = rescued(exc, loaded, step, total)
        if folder:
            runs.failed(folder, "saving a checkpoint" if getattr(exc, "checkpoint_failed", False) else "training",
                        exc)
    events.run_failed(exc)
    return exc


def rescued(exc: ExportError, loaded: LoadedModel, step: int, total) -> ExportError:
    """A checkpoint the disk could not take: the adapters trained so far go to a rescue folder, and the error
    (one line) says where and carries the model (`.loaded`)."""
    from .adapters import rescue_adapters

    loaded.trained = runs.RunState(runs.FAILED, step, total, loaded.config.output_dir)
    try:
        spare = rescue_adapters(loaded)
        where = f"The adapters trained so far (step {step}) were saved to {spare} instead"
    except NbkitError as again:
        spare, where = None, str(again).rstrip(".")  # says what failed and what to do
    err = ExportError(f"{exc} {where}.")  # Python callers find the model on the error (.loaded); the CLI has none
    err.loaded, err.saved_to, err.checkpoint_failed = loaded, spare, True
    print(f"nbkit: {err}")
    return err


def translate(exc: BaseException, loaded: LoadedModel) -> BaseException:
    if is_oom(exc):
        cfg = loaded.config
        return HardwareError(
            f"Out of GPU memory at batch {cfg.batch_size} × {cfg.max_seq_length} tokens. Use "
            f"batch_size={max(1, cfg.batch_size // 2)} with grad_accum={cfg.grad_accum * 2} (same effective "
            f"batch), a shorter max_seq_length, or quantization='4bit'.")
    return exc


def diverged(loaded: LoadedModel, where: tuple[int, str], out: Path) -> TrainingDivergedError:
    step, what = where
    good, _ = outputs.newest_checkpoint(out)
    last = f"The last good checkpoint is {good}." if good else "No checkpoint was saved before it."
    err = TrainingDivergedError(
        f"Training diverged at step {step}: {what}. The likely cause is a learning rate too high for this model "
        f"(learning_rate={loaded.config.learning_rate:g}; LoRA usually trains well at 1e-4 to 3e-4). Nothing "
        f"non-finite was saved. {last}")
    err.step, err.checkpoint = step, str(good) if good else None
    return err
