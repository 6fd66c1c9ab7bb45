"""How a run ends badly, told the user's way: out of memory with settings that fit, a loss that stopped being
finite with the last good checkpoint, a second Ctrl-C mid-step as an interrupt that says what was saved."""
from types import SimpleNamespace

import pytest
import torch

from nbkit.errors import HardwareError, TrainingInterrupted
from nbkit.planning.config import RunConfig
from nbkit.training import outputs, runs
from nbkit.training.events import RunEvents, RunObserver
from nbkit.training.train_failures import diverged, failed, translate


class Failures(RunObserver):
    def __init__(self):
        self.seen = []

    def run_failed(self, error):
        self.seen.append(error)


def loaded(**settings) -> SimpleNamespace:
    return SimpleNamespace(config=RunConfig(**settings), trained=None)


def trainer_at(step: int, total: int) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(global_step=step, max_steps=total))


@pytest.mark.parametrize("oom", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                 RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB")])
def test_out_of_memory_says_what_would_fit(oom):
    err = translate(oom, loaded(batch_size=8, grad_accum=2, max_seq_length=2048))
    assert isinstance(err, HardwareError)
    assert "Out of GPU memory at batch 8 × 2048 tokens" in str(err)
    assert "batch_size=4 with grad_accum=4 (same effective batch)" in str(err)


def test_other_errors_pass_unchanged():
    err = ValueError("a bug")
    assert translate(err, loaded()) is err


def test_divergence_names_the_step_the_learning_rate_and_the_last_good_checkpoint(tmp_path):
    (tmp_path / "checkpoint-20").mkdir()
    (tmp_path / "checkpoint-20" / outputs.CHECKPOINT_MARKER).write_text("{}")
    (tmp_path / "checkpoint-30").mkdir()  # cut short: not good
    err = diverged(loaded(learning_rate=5e-2), (31, "the loss is nan"), tmp_path)
    assert str(err).startswith("Training diverged at step 31: the loss is nan.")
    assert "learning_rate=0.05" in str(err) and f"The last good checkpoint is {tmp_path / 'checkpoint-20'}." in str(err)
    assert (err.step, err.checkpoint) == (31, str(tmp_path / "checkpoint-20"))
    none = diverged(loaded(), (2, "the gradient norm is inf"), tmp_path / "empty")
    assert "No checkpoint was saved before it." in str(none) and none.checkpoint is None


def test_a_second_interrupt_mid_step_is_an_interrupt_that_says_what_is_saved():
    watcher = Failures()
    model = loaded()
    err = failed(KeyboardInterrupt(), model, trainer_at(6, 10), RunEvents([watcher]), folder=None)
    assert isinstance(err, TrainingInterrupted) and watcher.seen == [err]
    assert "during step 7: that step is not saved" in str(err) and "none yet" in str(err)
    assert err.loaded is model and model.trained == runs.RunState(runs.INTERRUPTED, 6, 10, "")


def test_a_failure_before_training_started_is_reported_as_it_is():
    watcher = Failures()
    err = failed(ValueError("bad data"), loaded(), None, RunEvents([watcher]), folder=None)
    assert isinstance(err, ValueError) and watcher.seen == [err]
