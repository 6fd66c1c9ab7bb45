"""What holds the GPU: the registry of models nbkit loaded in this process, and the words the memory check uses."""
import gc
from types import SimpleNamespace

import pytest

from nbkit.planning import gpu_holders


class Loaded:  # what the registry reads of a LoadedModel: its config's model id and whether it was released
    def __init__(self, model: str):
        self.config = SimpleNamespace(model=model)
        self.released = False


@pytest.fixture(autouse=True)
def empty_registry(monkeypatch):
    monkeypatch.setattr(gpu_holders, "_loaded", [])


def test_held_models_are_the_registered_ones_still_alive_and_not_released():
    first, second = Loaded("a/one"), Loaded("b/two")
    gpu_holders.register(first)
    gpu_holders.register(second)
    assert gpu_holders.held_models() == [first, second]  # oldest first
    first.released = True
    assert gpu_holders.held_models() == [second]
    del second
    gc.collect()
    assert gpu_holders.held_models() == []  # weak references: the registry never keeps a model alive


def test_registering_forgets_models_that_are_gone():
    for i in range(5):
        gpu_holders.register(Loaded(f"m/{i}"))  # each dies as the next is made
    gc.collect()
    gpu_holders.register(keep := Loaded("m/kept"))
    assert len(gpu_holders._loaded) == 1 and gpu_holders.held_models() == [keep]


def test_holders_name_this_kernels_models_and_other_processes():
    gpu_holders.register(loaded := Loaded("unsloth/Qwen3-8B"))
    said = gpu_holders.holders(held_gib=6.0, own_reserved_gib=4.5)
    assert said[0].startswith("4.50 GiB by this kernel") and "unsloth/Qwen3-8B" in said[0]
    assert "keep_previous=True" in said[0]
    assert said[1] == "1.50 GiB by other processes (nvidia-smi lists them)"
    assert loaded  # still held


def test_holders_without_nbkit_models_say_what_to_do_and_nothing_for_crumbs():
    (said,) = gpu_holders.holders(held_gib=2.0, own_reserved_gib=2.0)
    assert "tensors of this kernel that nbkit did not load" in said
    assert gpu_holders.holders(held_gib=0.01, own_reserved_gib=0.01) == []


def test_the_loader_fills_the_same_registry():
    from nbkit.loading import gpu_session

    gpu_session.register(loaded := Loaded("x/y"))
    assert gpu_holders.held_models() == [loaded] == gpu_session.held_models()
