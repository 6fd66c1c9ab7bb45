"""The runner owns a run: it trains on a thread of its own and returns at once, keeps the run's result or its
error, ends a run at a step boundary when asked, refuses a second run while one is going, and on the main
thread keeps Ctrl-C (SIGINT) a stop at a step boundary. Real tiny runs on CPU, through nbkit.workflow."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from nbkit import RunConfig
from nbkit.errors import ModelNotFoundError, TrainingInterrupted
from nbkit.runner import Runner, RunInProgress, saving, training
from nbkit.training.events import RunObserver


def config(out: Path, **changes) -> RunConfig:
    base = dict(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=3, lora_r=4,
                save_steps=0, max_samples=16, output_dir=str(out))
    return RunConfig(**{**base, **changes})


class Steps(RunObserver):
    """The steps the run published, and the thread it published them from."""

    def __init__(self, then=None):
        self.steps: list[int] = []
        self.threads: set[str] = set()
        self.then = then

    def step_finished(self, info):
        if info.loss is None:
            return
        self.steps.append(info.step)
        self.threads.add(threading.current_thread().name)
        if self.then is not None:
            self.then(info.step)


def wait_for(condition, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.05)
    assert condition()


def test_a_run_trains_on_its_own_thread_and_keeps_its_result(tmp_path, tiny_dir):
    out = tmp_path / "run"
    runner, steps, ended = Runner("nbkit-test"), Steps(), []
    runner.on_end(lambda r: ended.append((r.running, r.result, r.error)))
    thread = runner.start(training(config(out), max_new_tokens=4), observers=[steps])
    assert thread.is_alive() and runner.running and thread is not threading.current_thread()  # returned at once
    assert runner.wait(300) and not runner.running
    report = runner.result
    assert runner.error is None and report.train.finished and report.train.steps == 3 and report.ok
    assert steps.steps == [1, 2, 3] and steps.threads == {"nbkit-test"}  # progress, from the run's own thread
    assert ended == [(False, report, None)]  # the end is told once, with the result, the run no longer going
    assert json.loads((out / "nbkit_run.json").read_text())["status"] == "finished"
    # an export is a run too: the adapters saved again from the folder on disk, its folder the result
    exporter = Runner("nbkit-export")
    exporter.start(saving("lora", out), wait=True)
    assert exporter.error is None and (Path(exporter.result) / "adapter_model.safetensors").is_file()


def test_stop_ends_the_run_at_a_step_boundary_and_a_second_start_is_refused(tmp_path, tiny_dir):
    out = tmp_path / "run"
    runner, steps = Runner(), Steps()
    runner.start(training(config(out, max_steps=200), max_new_tokens=4), observers=[steps])
    wait_for(lambda: len(steps.steps) >= 2 or not runner.running)
    with pytest.raises(RunInProgress, match="a run is still going; stop it .* or wait for it"):
        runner.start(training(config(tmp_path / "other")))
    assert runner.running and not (tmp_path / "other").exists()  # the run going is untouched
    assert runner.stop("test") and runner.stop_requested
    assert runner.wait(300)
    train = runner.result.train
    assert runner.error is None and train.stopped and train.state == "stopped" and train.stop_reason == "test"
    assert 2 <= train.steps < 200 and steps.steps[-1] == train.steps  # it ended on a step it had finished
    assert (out / f"checkpoint-{train.steps}").is_dir()  # what Resume continues from
    assert json.loads((out / "nbkit_run.json").read_text())["status"] == "stopped"
    assert not runner.stop("again")  # nothing to stop now
    # and the next run starts with the stop cleared: it trains to its end
    runner.start(training(config(tmp_path / "next", max_steps=2), max_new_tokens=4), wait=True)
    assert runner.error is None and runner.result.train.finished and runner.result.train.steps == 2


def test_an_error_is_the_runs_outcome_and_the_runner_takes_the_next_run(tmp_path):
    runner, ended = Runner(), []
    runner.on_end(lambda r: 1 / 0)  # a view that fails to draw the end ...
    runner.on_end(lambda r: ended.append(type(r.error).__name__))  # ... keeps no other from it
    runner.start(training(config(tmp_path / "run", model="nobody/no-such-model")), wait=True)
    assert isinstance(runner.error, ModelNotFoundError) and runner.result is None and not runner.running
    assert "no-such-model" in str(runner.error) and ended == ["ModelNotFoundError"]

    def bug(stop, events):
        raise ValueError("a bug in the work")

    runner.start(bug, wait=True)
    assert isinstance(runner.error, ValueError) and runner.error.__traceback__ is not None  # kept whole
    assert runner.start(lambda stop, events: 42, wait=True) and runner.result == 42 and runner.error is None
    with pytest.raises(ValueError, match="a bug in the work"):  # run(): the error raised where it was called
        runner.run(bug)
    assert isinstance(runner.error, ValueError) and ended[-1] == "ValueError"


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals: main thread")
def test_on_the_main_thread_ctrl_c_stops_at_a_step_boundary(tmp_path, tiny_dir):
    """What the CLI does: run() on the main thread, where SIGINT asks for a stop at the next step boundary and
    the run then raises TrainingInterrupted (the CLI exits 130) with its checkpoint saved."""
    out = tmp_path / "run"
    sent = []

    def interrupt(step):
        if step == 2 and not sent:
            sent.append(step)
            os.kill(os.getpid(), signal.SIGINT)

    runner, before = Runner(), signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as caught:
        runner.run(training(config(out, max_steps=200), max_new_tokens=4), observers=[Steps(interrupt)])
    exc = caught.value
    assert runner.error is exc and not runner.running and exc.signal == "SIGINT"
    assert 2 <= exc.result.steps < 200 and (out / f"checkpoint-{exc.result.steps}").is_dir()
    assert json.loads((out / "nbkit_run.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C is what it was again


def test_a_run_drawing_its_end_still_counts_as_going_for_everyone_else():
    """The end listeners (a view drawing the result) are part of the run for other threads: a new start waits for
    them, so a view never draws one run's end over the next one's start."""
    drawing, release, seen = threading.Event(), threading.Event(), []

    def draw(runner):
        seen.append(runner.running)  # on the run's own thread: the work is over
        drawing.set()
        release.wait(30)

    runner = Runner()
    runner.on_end(draw)
    runner.start(lambda stop, events: "done")
    assert drawing.wait(30) and runner.result == "done" and seen == [False]
    assert runner.running and not runner.wait(0.05)  # from here, the run is still being drawn
    with pytest.raises(RunInProgress):
        runner.start(lambda stop, events: "next")
    release.set()
    assert runner.wait(30) and not runner.running and runner.result == "done"


def test_idle_runner():
    runner = Runner()
    assert not runner.running and runner.wait(0) and not runner.stop() and runner.result is None
