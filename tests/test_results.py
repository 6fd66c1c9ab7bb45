"""What a run reports: losses, speed over the whole run and after warm-up, and a one-line summary; a step timer
for measuring. Built from a trainer's state as the HF Trainer leaves it."""
from types import SimpleNamespace

import pytest

from nbkit.training import outputs
from nbkit.training.events import StepInfo
from nbkit.training.results import StepTimer, TrainResult, result_from


def test_speed_after_warm_up_leaves_the_first_steps_out():
    marks = [(5.0, 100), (6.0, 200), (7.0, 300), (8.0, 400), (9.0, 500)]  # a slow first step, then 100 tokens/s
    result = TrainResult(steps=5, losses=[(1, 2.0), (5, 1.0)], train_seconds=9.0, tokens=500, step_marks=marks)
    assert result.tokens_per_second == pytest.approx(500 / 9.0)
    assert result.steady_tokens_per_second(warmup=1) == pytest.approx(100.0)
    assert TrainResult(steps=2, losses=[], step_marks=marks[:3]).steady_tokens_per_second() is None  # too few
    assert (result.first_loss, result.final_loss) == (2.0, 1.0)


def test_data_parallel_speed_counts_every_gpu():
    marks = [(0.0, 0), (1.0, 50), (2.0, 100), (3.0, 150), (4.0, 200)]
    result = TrainResult(steps=4, losses=[(4, 1.0)], train_seconds=4.0, tokens=400, step_marks=marks,
                         processes=2, tokens_this_rank=200)
    assert result.steady_tokens_per_second() == pytest.approx(100.0)  # 2 GPUs × 50 tokens/s each
    assert "over 2 GPUs (this GPU 50)" in result.summary()


def test_the_summary_says_how_the_run_ended():
    done = TrainResult(steps=4, losses=[(1, 2.5), (4, 1.25)], train_seconds=2.0, tokens=1000,
                       peak_vram_gib=3.5, peak_allocated_gib=2.25)
    assert done.finished and done.summary() == ("4 steps in 2.0 s, loss 2.500 → 1.250, 500 tokens/s, "
                                                "peak VRAM 3.50 GiB reserved (2.25 allocated)")
    stopped = TrainResult(steps=3, losses=[(3, 1.0)], train_seconds=1.0, tokens=10, stopped=True,
                          stop_reason="Stop pressed", state="stopped", total=10)
    assert not stopped.finished and stopped.summary().startswith("3/10 steps in 1.0 s (stopped early: Stop pressed)")


def test_result_from_reads_the_trainers_history_and_its_complete_checkpoints(tmp_path):
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-2" / outputs.CHECKPOINT_MARKER).write_text("{}")  # 4 was cut short
    trainer = SimpleNamespace(
        state=SimpleNamespace(global_step=4, max_steps=6, log_history=[
            {"step": 2, "loss": 2.0}, {"step": 2, "eval_loss": 2.2}, {"step": 4, "loss": 1.5}, {"train_runtime": 1}]),
        args=SimpleNamespace(output_dir=str(tmp_path)), nbkit_token_counter=SimpleNamespace(tokens=640))
    result = result_from(trainer, seconds=3.2, on_cuda=False, marks=[(1.0, 320)])
    assert result.losses == [(2, 2.0), (4, 1.5)] and result.eval_losses == [(2, 2.2)]
    assert result.checkpoints == [str(tmp_path / "checkpoint-2")]
    assert (result.steps, result.total, result.tokens, result.tokens_this_rank, result.processes) == (4, 6, 640, 640, 1)
    assert result.peak_vram_gib is None and result.step_marks == [(1.0, 320)]


def test_the_step_timer_times_training_steps_only(monkeypatch):
    clock = iter([10.0, 12.0, 12.5, 13.0, 13.5])
    monkeypatch.setattr("nbkit.training.results.time.perf_counter", lambda: next(clock))
    timer = StepTimer(warmup=1)
    timer.training_started(total_steps=4)
    for step in (1, 2, 3):
        timer.step_finished(StepInfo(step, 4, 1.0, 1e-4, 0, 0.0))
    timer.step_finished(StepInfo(3, 4, None, None, 0, 0.0, eval_loss=1.1))  # an evaluation is not a step
    timer.step_finished(StepInfo(4, 4, 1.0, 1e-4, 0, 0.0))
    assert timer.times == [2.0, 0.5, 0.5, 0.5] and timer.steady() == 0.5
    assert StepTimer(warmup=5).steady() is None
