import time

import pytest

from nbkit.training.events import StepInfo
from nbkit.ui.display import Display, TextDisplay, resolve_mode
from nbkit.ui.progress import TrainingProgress, fmt_seconds


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Recorder(Display):
    wants_plot = True

    def __init__(self, clock, plot_cost):
        self.clock, self.plot_cost = clock, plot_cost
        self.stats_calls, self.plots, self.ended, self.errors = [], 0, None, []

    def stats(self, line, values):
        self.stats_calls.append(line)

    def plot(self, png):
        assert png.startswith(b"\x89PNG")
        self.plots += 1
        self.clock.t += self.plot_cost  # drawing takes time

    def end(self, summary):
        self.ended = summary

    def error(self, message):
        self.errors.append(message)


def drive(steps, step_seconds, plot_cost, budget=0.01):
    clock = Clock()
    cb = TrainingProgress(stats_interval=0.5, plot_budget=budget, clock=clock, plot_thread=False)
    cb.display = Recorder(clock, plot_cost)
    cb.training_started(steps)
    for step in range(1, steps + 1):
        clock.t += step_seconds
        cb.step_finished(StepInfo(step, steps, 5.0 - step * 0.01, 1e-4, 1000 * step, clock.t))
    cb.run_finished()
    return cb, clock


def test_plot_redraws_cost_at_most_the_budget():
    # 0.1 s steps, a 0.2 s plot: unthrottled this would be 2x the training time
    cb, clock = drive(steps=2000, step_seconds=0.1, plot_cost=0.2)
    assert cb.redraws >= 2
    assert cb.plot_seconds / clock.t < 0.02  # under 2% of the run's time
    assert len(cb.display.stats_calls) <= 2000 * 0.1 / 0.5 + 2  # stats at most every 0.5 s


def test_the_curve_is_drawn_on_its_own_thread_every_few_seconds_and_never_holds_a_step_up():
    """Live: a redraw every plot_interval; the training thread only hands over a copy of the losses, so a slow
    drawing (0.3 s here) costs the steps nothing."""
    import threading

    class Slow(Recorder):
        def plot(self, png):
            assert png.startswith(b"\x89PNG") and threading.current_thread().name == "nbkit-plot" or self.final
            time.sleep(0.3)
            self.plots += 1

    slow = Slow(Clock(), 0.0)
    slow.final = False
    cb = TrainingProgress(stats_interval=0.05, plot_interval=0.5)
    cb.display = slow
    cb.training_started(40)
    longest = 0.0
    for step in range(1, 41):
        time.sleep(0.05)
        t0 = time.perf_counter()
        cb.step_finished(StepInfo(step, 40, 5.0 - step * 0.01, 1e-4, 1000 * step, 0.05 * step))
        longest = max(longest, time.perf_counter() - t0)
    slow.final = True
    cb.run_finished()
    assert cb.redraws >= 3  # about every 0.5 s of a 2 s run, and the last one at the end
    assert longest < 0.1  # no step waited for a drawing


def test_stats_summary_and_eta():
    cb, clock = drive(steps=100, step_seconds=1.0, plot_cost=0.01)
    assert cb.finished and cb.display.ended.startswith("Training finished: 100 steps")
    assert "loss 4.9900 → 4.0000" in cb.display.ended
    assert "tokens/s." in cb.display.ended and "after the first step" not in cb.display.ended  # steady run


def test_a_slow_first_step_is_left_out_of_eta_and_speed():
    """FP8's first step compiles for minutes: ETA and tok/s must come from the steps after it."""
    clock = Clock()
    cb = TrainingProgress(stats_interval=0.0, clock=clock)
    cb.display = Recorder(clock, plot_cost=0.0)
    cb.training_started(100)
    for step in range(1, 26):
        clock.t += 300.0 if step == 1 else 2.0  # 5 minutes of compilation, then 2 s steps
        cb.step_finished(StepInfo(step, 100, None, None, 4000 * step, clock.t))
        if step == 1:  # one step says nothing about the rest: no ETA, the phase instead
            assert cb.stats()["eta"] is None and cb.stats()["warming_up"]
            assert "compiling / warming up (ETA after the next step)" in cb.stats_line()
    stats = cb.stats()
    assert stats["eta"] == pytest.approx(75 * 2.0) and stats["tokens_per_s"] == pytest.approx(2000.0)
    line = cb.stats_line()
    assert "step 25/100" in line and "ETA 2:30" in line and "2,000 tok/s" in line
    assert "first step 5:00 (one-off compilation" in line
    cb.run_finished()
    assert cb.display.ended.endswith("287 tokens/s (2,000 after the first step).")


def test_errors_are_shown_with_advice():
    from nbkit import HardwareError

    cb, _ = drive(steps=3, step_seconds=1.0, plot_cost=0.0)
    cb.fail(HardwareError("Out of GPU memory at batch 8 × 2048 tokens. Use batch_size=4 with grad_accum=8"))
    assert cb.display.errors == [cb.error] and "out of GPU memory" in cb.error and "batch_size=4" in cb.error
    cb.fail(ValueError("bad"))
    assert cb.error == "Training stopped on an error: ValueError: bad"


def test_text_display_throttles_lines():
    clock = Clock()
    lines = []
    text = TextDisplay(interval=10.0, printer=lines.append, clock=clock)
    text.begin(50)
    for i in range(100):
        clock.t = i
        text.stats(f"line {i}", {})
    text.end("done")
    assert lines == ["nbkit: training for 50 steps"] + [f"line {i}" for i in range(0, 100, 10)] + ["done"]


def test_display_mode(monkeypatch):
    monkeypatch.setenv("NBKIT_DISPLAY", "text")
    assert resolve_mode("auto") == "text"
    monkeypatch.delenv("NBKIT_DISPLAY")
    assert resolve_mode("auto") == "text"  # pytest is no notebook kernel
    assert resolve_mode("widgets") == "widgets"
    with pytest.raises(ValueError):
        resolve_mode("fancy")


def test_fmt_seconds():
    assert fmt_seconds(5) == "0:05" and fmt_seconds(3725) == "1:02:05"


def test_progress_in_a_real_run(tiny_dir, tmp_path):
    from nbkit import RunConfig
    from nbkit.loading import data, models
    from nbkit.training import train

    cfg = RunConfig(quantization="16bit", max_seq_length=96, batch_size=2, grad_accum=1, max_steps=6,
                    save_steps=0, max_samples=20, output_dir=str(tmp_path))
    loaded = models.load(cfg)
    lines = []
    cb = TrainingProgress(mode="text")
    cb.display = TextDisplay(interval=0.0, printer=lines.append)
    train.run(loaded, data.prepare(cfg, loaded.tokenizer), progress=cb)
    assert lines[0] == "nbkit: training for 6 steps" and lines[-1].startswith("Training finished: 6 steps")
    assert any(line.startswith("step 6/6") for line in lines)
    assert len(cb.losses) == 6 and cb.tokens > 0


def test_a_data_parallel_run_shows_the_global_speed_labelled():
    """Rank 0 counts its own rows: the line shows the global figure, marked approximate, and this GPU's."""
    clock = Clock()
    cb = TrainingProgress(stats_interval=0.0, clock=clock, world_size=2)
    cb.display = Recorder(clock, plot_cost=0.0)
    cb.training_started(10)
    for step in range(1, 6):
        clock.t += 2.0
        cb.step_finished(StepInfo(step, 10, None, None, 4000 * step, clock.t))
    assert "≈4,000 tok/s over 2 GPUs (this GPU 2,000)" in cb.stats_line()
    cb.run_finished()
    assert "≈4,000 tokens/s over 2 GPUs (this GPU 2,000)" in cb.display.ended


def test_the_report_counts_every_gpus_tokens():
    from nbkit.training.results import TrainResult

    one = TrainResult(steps=10, losses=[(1, 2.0)], train_seconds=10.0, tokens=40_000, tokens_this_rank=40_000)
    two = TrainResult(steps=10, losses=[(1, 2.0)], train_seconds=10.0, tokens=80_000, processes=2,
                      tokens_this_rank=40_000, step_marks=[(i, 4000 * i) for i in range(1, 11)])
    assert "4,000 tokens/s" in one.summary() and "GPUs" not in one.summary()
    assert "8,000 tokens/s over 2 GPUs (this GPU 4,000)" in two.summary()
    assert two.steady_tokens_per_second() == pytest.approx(8000.0)
