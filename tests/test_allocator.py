"""The plan is made for the allocator the run will have: expandable segments when nbkit can set them (before CUDA
starts, or through torch's run-time switch after), else the default allocator's measured reservation, said once."""
import os

import pytest

from nbkit.loading import backend
from nbkit.planning.cards import planned_gpu
from nbkit.planning import allocator
from nbkit.planning.recommend import recommend
from nbkit.specs import spec_for


def test_who_decides_the_allocator():
    assert allocator.decide(None, cuda_initialised=False, late_switch_worked=None) == allocator.EXPANDABLE
    assert allocator.decide(None, True, True) == allocator.LATE
    assert allocator.decide(None, True, False) == allocator.DEFAULT
    assert allocator.decide("expandable_segments:True", True, None) == allocator.EXPANDABLE  # the user's, and ours
    assert allocator.decide("max_split_size_mb:128", False, None) == allocator.USER


@pytest.fixture
def cuda_in_use(monkeypatch):
    """CUDA as the user's code (or `import unsloth` first) left it: available and already initialised."""
    import torch

    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(backend, "_allocator_said", False)
    monkeypatch.setattr(allocator, "_state", None)
    return torch


def plan():
    return recommend(spec_for("unsloth/Meta-Llama-3.1-8B-Instruct"), planned_gpu("T4"))


def test_cuda_touched_first_and_torch_refusing_the_switch_plans_the_default_allocator(cuda_in_use, monkeypatch,
                                                                                      capsys):
    before = plan()

    def refuse(setting):
        raise RuntimeError("this torch cannot change the allocator after CUDA started")

    monkeypatch.setattr(cuda_in_use._C, "_accelerator_setAllocatorSettings", refuse, raising=False)
    monkeypatch.setattr(cuda_in_use.cuda.memory, "_set_allocator_settings", refuse)
    assert not backend.configure_allocator()
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and "default allocator's measured reservation" in said
    assert allocator.current() == allocator.DEFAULT and "PYTORCH_CUDA_ALLOC_CONF" not in os.environ
    after = plan()
    # the same model on the same card: what the default allocator reserves leaves room for a smaller batch only
    assert after.breakdown.reserved - after.breakdown.allocated > before.breakdown.reserved - before.breakdown.allocated
    assert after.config.batch_size < before.config.batch_size


def test_cuda_touched_first_gets_expandable_segments_at_run_time_when_torch_takes_them(cuda_in_use, monkeypatch,
                                                                                       capsys):
    asked = []
    monkeypatch.setattr(cuda_in_use._C, "_accelerator_setAllocatorSettings", asked.append, raising=False)
    before = plan()
    assert backend.configure_allocator()
    assert asked == [backend.ALLOCATOR_SETTING] and allocator.current() == allocator.LATE
    assert "switched on at run time" in capsys.readouterr().out
    assert plan().breakdown.reserved == before.breakdown.reserved  # planned as with the environment setting
