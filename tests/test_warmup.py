"""warmup: a warmup never leaves a run's steps at a learning rate of 0, and a clipped one is said."""
import pytest

from nbkit.training.warmup import clipped_warmup


@pytest.mark.parametrize("warmup, total, steps", [
    (5, 1, 0),  # the default warmup, a 1-step run: its only step would train at lr 0
    (1, 1, 0),
    (5, 2, 1),
    (5, 5, 2),
    (12, 10, 5),
])
def test_a_warmup_as_long_as_the_run_is_clipped_to_half_of_it_and_said(warmup, total, steps):
    got, note = clipped_warmup(warmup, total)
    assert got == steps and got < total
    assert note.startswith(f"warmup_steps={warmup} is not shorter than this run's {total} step(s)")
    assert f"warming up over {steps} step(s) instead" in note


@pytest.mark.parametrize("warmup, total", [(0, 1), (5, 6), (5, 60), (0, 0)])
def test_a_warmup_shorter_than_the_run_is_kept_without_a_word(warmup, total):
    assert clipped_warmup(warmup, total) == (warmup, "")


def test_the_clipped_schedule_trains_every_step_but_the_warmups_first_above_zero():
    """With the HF linear schedule as the trainer builds it: every step after a clipped warmup's first trains
    at a learning rate above 0, and a 1-step run's only step at the full rate."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    for total in (1, 2, 3, 5):
        warmup, _ = clipped_warmup(5, total)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = get_linear_schedule_with_warmup(opt, warmup, total)
        rates = []
        for _ in range(total):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert rates[-1] > 0 and sum(r > 0 for r in rates) >= total - 1, (total, rates)
        assert total > 1 or rates == [1.0]
