"""A warmup that fits the run: never one that leaves a short run's steps at a learning rate of 0.

The HF schedulers start warmup at 0: step k of a w-step warmup trains at k/w of the learning rate, so the first step
always trains at 0, and a run no longer than its warmup never reaches its learning rate (the default warmup of 5
gives a 1-step run nothing but lr 0). Such a warmup is clipped to half the run, and that is said in one line.
"""
from __future__ import annotations


def clipped_warmup(warmup: int, total: int) -> tuple[int, str]:
    """(the warmup steps to use, what to say: "" when `warmup` is kept). A warmup at least as long as the run
    becomes half the run (0 for a 1-step run): the later steps train at a learning rate above 0."""
    if total <= 0 or warmup < total:
        return warmup, ""
    steps = total // 2
    return steps, (f"warmup_steps={warmup} is not shorter than this run's {total} step(s), so "
                   + ("its only step would train at a learning rate of 0" if total == 1 else
                      "it would never reach its learning rate")
                   + f": warming up over {steps} step(s) instead (set warmup_steps below {total} to choose).")


class ClippedWarmup:
    """Trainer mix-in: the scheduler is built with the warmup clipped to the run (see module doc)."""

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            steps, note = clipped_warmup(self.args.get_warmup_steps(num_training_steps), num_training_steps)
            if note:
                self.args.warmup_steps = steps
                if getattr(self.args, "warmup_ratio", None):
                    self.args.warmup_ratio = 0.0  # the steps above replace it
                from ..gpus.distributed import is_main

                if is_main():
                    print(f"nbkit: {note}")
                self.nbkit_warmup_note = note
        return super().create_scheduler(num_training_steps, optimizer)
