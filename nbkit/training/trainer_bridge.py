"""Between the HF Trainer and nbkit's observers: trainer hooks in, RunEvents out, stop requests back.

One callback (TrainerBridge) does it all, so the training loop itself stays the Trainer's: it reads only values the
trainer already brought to the host (the logged loss, the allocator's host-side counters), turns them into
`StepInfo` events, ends the run at a step boundary when a stop is requested, saves on a timer, and stops a run
whose loss or gradient is no longer finite before anything non-finite is saved.
"""
from __future__ import annotations

import math
import time

from .events import EpochPlan, RunEvents, StepInfo, StopControl
from ..planning.hardware import live_vram


class TokenCounter:
    """Wraps the data collator to count real (non-padding) tokens on the CPU side: no GPU sync needed."""

    def __init__(self, collator):
        self.collator = collator
        self.tokens = 0

    def __call__(self, examples):
        self.tokens += sum(len(ex["input_ids"]) for ex in examples)
        return self.collator(examples)

    def __getattr__(self, name):  # the trainer (and Unsloth) read the wrapped collator's settings, e.g. padding_free
        if name == "collator":
            raise AttributeError(name)
        return getattr(self.collator, name)


def _finite(value) -> bool:
    return value is None or math.isfinite(float(value))


def _ignored(args, state, control, **kwargs):
    return None  # an event the bridge does not watch: the control unchanged


class TrainerBridge:
    """The Trainer's callback that publishes the run (see module doc), for any HF Trainer. A plain class, not a
    subclass of transformers' TrainerCallback, so that this module imports no transformers (Unsloth must be
    imported first): the Trainer's CallbackHandler calls `getattr(callback, event)(args, state, control, **kw)`
    for each event, and every `on_*` event the bridge does not watch is a no-op (`__getattr__`).

    `save_minutes` > 0 also saves a checkpoint whenever that long has passed since the last one. Without
    `counter`, tokens read 0. `packing` (nbkit.loading.packing.PackingPlan) says what an epoch holds; without it
    the epoch is not described."""

    def __init__(self, events: RunEvents, stop: StopControl | None = None, counter: TokenCounter | None = None,
                 save_minutes: float = 0.0, clock=time.perf_counter, packing=None):
        self.events, self.stop = events, stop or StopControl()
        self.counter = counter or TokenCounter(None)
        self.save_minutes, self.clock, self.packing = save_minutes, clock, packing
        self.start = clock()
        self.last_save = self.start
        self.marks: list[tuple[float, int]] = []  # (seconds since start, tokens) at each step's end
        self.pending: dict | None = None
        self.diverged: tuple[int, str] | None = None  # (step, what was not finite)
        self.stopped_at: int | None = None
        self.first_step = 0

    def __getattr__(self, name: str):
        if name.startswith("on_"):
            return _ignored
        raise AttributeError(name)

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self.last_save = self.clock()
        self.first_step = state.global_step
        self.events.training_started(state.max_steps, state.global_step)
        loader, packing = kwargs.get("train_dataloader"), self.packing
        if packing is not None and loader is not None:
            per_epoch = max(1, math.ceil(len(loader) / args.gradient_accumulation_steps))
            self.events.epoch_planned(EpochPlan(per_epoch, state.max_steps, packing.rows, packing.sequences,
                                                packing.tokens, packing.on))
        self.events.phase_changed("warming_up", "first step: kernels compile and the allocator grows")

    def on_step_end(self, args, state, control, **kwargs):
        seconds = self.clock() - self.start
        tokens = self.counter.tokens
        self.marks.append((seconds, tokens))
        if state.global_step == self.first_step + 1:
            self.events.phase_changed("training", "")
        self._flush()
        self.pending = dict(step=state.global_step, total=state.max_steps, tokens=tokens, seconds=seconds,
                            memory=live_vram())
        if self.save_minutes and self.clock() - self.last_save >= 60 * self.save_minutes:
            control.should_save = True
        self._check_stop(state, control)
        return control

    def on_save(self, args, state, control, **kwargs):
        self.last_save = self.clock()

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        loss, grad = logs.get("loss"), logs.get("grad_norm")
        # with fp16 loss scaling an infinite gradient only skips that step: not a divergence
        if not _finite(loss) or (not args.fp16 and not _finite(grad)):
            what = f"loss {loss}" if not _finite(loss) else f"gradient norm {grad}"
            self.diverged = (state.global_step, what)
            control.should_training_stop = True
            control.should_save = False  # never checkpoint non-finite adapters
            self.pending = None
            return control
        if self.pending is not None and self.pending["step"] == state.global_step:
            self.pending.update(loss=loss, learning_rate=logs.get("learning_rate"), grad_norm=grad)
            self._flush()
        elif "eval_loss" in logs:
            self.events.step_finished(StepInfo(state.global_step, state.max_steps, None, None, self.counter.tokens,
                                               self.clock() - self.start, live_vram(), eval_loss=logs["eval_loss"]))
        self._check_stop(state, control)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._flush()

    def _flush(self):
        if self.pending is not None:
            self.events.step_finished(StepInfo(**{"loss": None, "learning_rate": None, **self.pending}))
            self.pending = None

    def _check_stop(self, state, control):
        if self.stop.requested and not self.diverged and state.global_step > self.first_step:
            # a checkpoint at the step just finished is what a resume continues from
            control.should_training_stop = True
            control.should_save = True
            self.stopped_at = state.global_step


def bridge(events: RunEvents, stop: StopControl | None = None, counter: TokenCounter | None = None,
           save_minutes: float = 0.0, clock=time.perf_counter, packing=None) -> TrainerBridge:
    """A TrainerBridge (the benchmarks attach one to a trainer of their own build)."""
    return TrainerBridge(events, stop, counter, save_minutes, clock, packing)
