"""One model on the GPU per kernel: loading again releases the model loaded before, and a released model says
so when used. On CPU the tensors stay where they are; what is checked is the bookkeeping and the words."""
from types import SimpleNamespace

import pytest
import torch

from nbkit.errors import HardwareError
from nbkit.loading import gpu_session
from nbkit.planning import gpu_holders


@pytest.fixture(autouse=True)
def empty_registry(monkeypatch):
    monkeypatch.setattr(gpu_holders, "_loaded", [])


class Loaded:  # what the session reads of a LoadedModel (which the registry holds by weak reference)
    def __init__(self, name: str):
        self.model, self.config, self.released = torch.nn.Linear(2, 2), SimpleNamespace(model=name), False


def loaded_model(name: str) -> Loaded:
    return Loaded(name)


def test_a_released_model_says_what_happened_when_used():
    gone = gpu_session.ReleasedModel("org/model (loaded earlier)")
    with pytest.raises(HardwareError, match=r"org/model \(loaded earlier\): This model was released"):
        gone.generate
    with pytest.raises(HardwareError, match="keep_previous=True"):
        gone(torch.zeros(1))


def test_release_marks_the_model_and_replaces_it_once():
    loaded = loaded_model("org/one")
    gpu_session.release(loaded)
    assert loaded.released and isinstance(loaded.model, gpu_session.ReleasedModel)
    placeholder = loaded.model
    gpu_session.release(loaded)  # twice: nothing more happens
    assert loaded.model is placeholder


def test_loading_again_releases_the_earlier_models_and_says_which():
    first, second = loaded_model("org/b"), loaded_model("org/a")
    gpu_session.register(first)
    gpu_session.register(second)
    said = gpu_session.release_previous()
    assert said.startswith("released the model loaded earlier in this kernel (org/a, org/b)")
    assert first.released and second.released and gpu_session.held_models() == []
    assert gpu_session.release_previous() is None  # nothing left to release


def test_keep_previous_keeps_them():
    kept = loaded_model("org/kept")
    gpu_session.register(kept)
    assert gpu_session.release_previous(keep_previous=True) is None
    assert not kept.released and gpu_session.held_models() == [kept]
