"""The bridge between transformers' Trainer and nbkit's observers, driven by transformers' own CallbackHandler (as
the Trainer drives it): every event the Trainer sends is taken, steps are published with their logged loss, a stop
request ends the run at the step boundary with a checkpoint, a non-finite loss stops it unsaved, and the timer
saves. The end-to-end runs are in tests/test_train.py."""
from __future__ import annotations

import pytest
from transformers import TrainingArguments
from transformers.trainer_callback import CallbackHandler, TrainerCallback, TrainerControl, TrainerState

from nbkit.training.events import RunEvents, RunObserver, StopControl
from nbkit.training.trainer_bridge import TokenCounter, TrainerBridge


class Heard(RunObserver):
    def __init__(self):
        self.steps, self.started, self.phases = [], [], []

    def training_started(self, total_steps, first_step=0):
        self.started.append((total_steps, first_step))

    def phase_changed(self, phase, detail=""):
        self.phases.append(phase)

    def step_finished(self, info):
        self.steps.append(info)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def run(tmp_path):
    """A bridge inside the Trainer's own CallbackHandler, with the state and control the Trainer passes."""
    heard, stop, clock = Heard(), StopControl(), Clock()
    counter = TokenCounter(lambda rows: rows)
    bridge = TrainerBridge(RunEvents([heard]), stop, counter, save_minutes=1.0, clock=clock)
    handler = CallbackHandler([bridge], None, None, None, None)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    state, control = TrainerState(max_steps=10), TrainerControl()
    return handler, bridge, heard, stop, clock, counter, args, state, control


def step(handler, args, state, control, counter, loss=0.5, grad=1.0):
    state.global_step += 1
    counter([{"input_ids": [1, 2, 3]}])  # the trainer collates a batch of one 3-token row
    control = handler.on_step_end(args, state, control)
    return handler.on_log(args, state, control, {"loss": loss, "grad_norm": grad, "learning_rate": 1e-4})


def test_every_event_the_trainer_sends_is_taken(run):
    handler, bridge, heard, stop, clock, counter, args, state, control = run
    events = [name for name in dir(TrainerCallback) if name.startswith("on_")]
    assert len(events) > 10 and "on_optimizer_step" in events
    for event in events:  # what the Trainer calls, event by event: none may be missing
        handler.call_event(event, args, state, control)
    with pytest.raises(AttributeError):
        bridge.not_an_event  # noqa: B018 — only on_* events are taken without being defined


def test_steps_are_published_with_their_loss_tokens_and_time(run):
    handler, bridge, heard, stop, clock, counter, args, state, control = run
    handler.on_train_begin(args, state, control)
    assert heard.started == [(10, 0)] and heard.phases == ["warming_up"]
    clock.now = 2.0
    step(handler, args, state, control, counter, loss=0.7)
    clock.now = 3.0
    step(handler, args, state, control, counter, loss=0.6)
    assert [(s.step, s.loss, s.tokens, s.seconds) for s in heard.steps] == [(1, 0.7, 3, 2.0), (2, 0.6, 6, 3.0)]
    assert heard.phases == ["warming_up", "training"] and bridge.marks == [(2.0, 3), (3.0, 6)]
    assert not control.should_training_stop


def test_a_stop_request_ends_the_run_at_the_step_boundary_with_a_checkpoint(run):
    handler, bridge, heard, stop, clock, counter, args, state, control = run
    handler.on_train_begin(args, state, control)
    stop.request("Stop button")  # between steps: the step under way finishes first
    control = step(handler, args, state, control, counter)
    assert control.should_training_stop and control.should_save and bridge.stopped_at == 1
    assert [s.step for s in heard.steps] == [1]  # the step that finished is still published


def test_a_non_finite_loss_stops_the_run_unsaved(run):
    handler, bridge, heard, stop, clock, counter, args, state, control = run
    handler.on_train_begin(args, state, control)
    step(handler, args, state, control, counter)
    control.should_save = True  # the trainer was about to save this step
    control = step(handler, args, state, control, counter, loss=float("nan"))
    assert bridge.diverged == (2, "loss nan") and control.should_training_stop and not control.should_save
    assert [s.step for s in heard.steps] == [1]  # the non-finite step is never published as trained


def test_a_checkpoint_is_saved_when_save_minutes_have_passed(run):
    handler, bridge, heard, stop, clock, counter, args, state, control = run
    handler.on_train_begin(args, state, control)
    clock.now = 30.0
    control = step(handler, args, state, control, counter)
    assert not control.should_save
    clock.now = 61.0
    control = step(handler, args, state, control, counter)
    assert control.should_save
    handler.on_save(args, state, control)
    control.should_save = False
    clock.now = 90.0
    assert not step(handler, args, state, control, counter).should_save  # the timer restarted at the save
