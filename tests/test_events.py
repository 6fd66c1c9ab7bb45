"""The run's events: fanned out to every observer (a broken one dropped, never the run), a stop flag any thread
may raise, Ctrl-C turned into a stop at the next step, and what an epoch is."""
import os
import signal
import threading

import pytest

from nbkit.training.events import EpochPlan, RunEvents, RunObserver, StepInfo, StopControl, as_events


class Recorder(RunObserver):
    def __init__(self):
        self.seen = []

    def phase_changed(self, phase, detail=""):
        self.seen.append(("phase", phase, detail))

    def step_finished(self, info):
        self.seen.append(("step", info.step))

    def stop_requested(self, reason):
        self.seen.append(("stop", reason))


class Broken(RunObserver):
    def step_finished(self, info):
        raise ValueError("a view's bug")


def step(n: int) -> StepInfo:
    return StepInfo(step=n, total=3, loss=1.0, learning_rate=1e-4, tokens=10 * n, seconds=float(n))


def test_every_observer_sees_every_event_in_order():
    a, b = Recorder(), Recorder()
    events = RunEvents([a, None, b])
    events.phase_changed("training", "step 0")
    events.step_finished(step(1))
    assert a.seen == b.seen == [("phase", "training", "step 0"), ("step", 1)]
    assert RunObserver().step_finished(step(1)) is None  # the base class ignores everything


def test_a_broken_observer_is_dropped_once_and_the_rest_go_on(capsys):
    good = Recorder()
    events = RunEvents([Broken(), good])
    events.step_finished(step(1))
    events.step_finished(step(2))
    assert good.seen == [("step", 1), ("step", 2)]
    assert len(events.observers) == 1
    err = capsys.readouterr().err
    assert err.count("observer Broken failed in step_finished and was removed") == 1 and "a view's bug" in err


def test_as_events_takes_what_a_caller_passes():
    one = Recorder()
    events = RunEvents([one])
    assert as_events(events) is events
    assert as_events(None).observers == [] and as_events(False).observers == []
    assert as_events(one).observers == [one]
    assert as_events((one, one)).observers == [one, one]


def test_a_stop_is_asked_once_from_any_thread_and_observers_hear_it():
    heard = Recorder()
    stop = StopControl(RunEvents([heard]))
    assert not stop.requested and not stop.interrupted
    worker = threading.Thread(target=stop.request, args=("Stop pressed",))
    worker.start()
    worker.join()
    stop.request("a second reason")  # the first request stands
    assert stop.requested and stop.reason == "Stop pressed" and not stop.interrupted
    assert heard.seen == [("stop", "Stop pressed")]
    stop.clear()
    assert not stop.requested and stop.reason == "" and stop.signal is None


def test_ctrl_c_asks_for_a_stop_then_a_second_one_interrupts_at_once():
    stop = StopControl()
    before = signal.getsignal(signal.SIGINT)
    with stop.on_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.interrupted and stop.signal == "SIGINT"
        assert "saving at the end of this step" in stop.reason
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # the handler is given back


def test_sigterm_asks_for_the_same_stop():
    stop = StopControl()
    with stop.on_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.signal == "SIGTERM" and "SIGTERM" in stop.reason


def test_off_the_main_thread_signals_are_left_alone():
    stop, handlers = StopControl(), []

    def in_thread():
        with stop.on_interrupt():
            handlers.append(signal.getsignal(signal.SIGINT))

    before = signal.getsignal(signal.SIGINT)
    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join()
    assert handlers == [before]


def test_an_epoch_plan_counts_epochs_by_optimizer_steps():
    plan = EpochPlan(steps_per_epoch=8, total_steps=20, rows=100, sequences=32, tokens=12_345, packed=True)
    assert plan.epochs_at(4) == 0.5 and plan.epochs == 2.5
    assert plan.describe() == ("One epoch: 100 rows packed into 32 sequences, 12,345 real tokens, 8 optimizer "
                               "steps; this run: 20 steps = 2.50 epochs.")
    empty = EpochPlan(steps_per_epoch=0, total_steps=3, rows=0, sequences=0, tokens=0, packed=False)
    assert empty.epochs_at(3) == 3.0  # never a division by zero
    assert empty.describe().startswith("One epoch: 0 rows,")


def test_a_stop_control_tells_the_observers_of_the_run_it_is_lent_to_and_only_while_it_lasts():
    """train.run lends a StopControl kept across runs (the launcher's) its run's observers for the run alone: the
    control is not left pointing at an ended run's observers, and who it told before is told again after."""
    from nbkit.training.events import RunEvents, RunObserver, StopControl

    class Heard(RunObserver):
        def __init__(self):
            self.reasons = []

        def stop_requested(self, reason):
            self.reasons.append(reason)

    owner, run = Heard(), Heard()
    stop = StopControl(RunEvents([owner]))
    with stop.telling(RunEvents([run])):
        stop.request("button")
    stop.clear()
    stop.request("after the run")
    assert run.reasons == ["button"] and owner.reasons == ["after the run"]
