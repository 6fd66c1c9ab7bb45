"""Fixtures: everything is built locally (tiny Llama, BPE tokenizer trained on the fly); no network."""
from __future__ import annotations

import os

import pytest

# Set before anything imports huggingface_hub: tests must never reach the Hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("NBKIT_DISPLAY", "text")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    os.environ["NBKIT_CACHE"] = str(tmp_path_factory.mktemp("nbkit-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_dir(_isolated_cache):
    from nbkit.loading.tiny import ensure_tiny_model

    return ensure_tiny_model()


@pytest.fixture(scope="session")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture
def fake_gpu():
    """A GpuInfo as check_gpu() would report for a given card (for memory/UI logic; nothing runs on it)."""
    from nbkit.planning.hardware import GpuInfo

    def make(total_gib=15.0, capability=(7, 5), name="Tesla T4", capped=None):
        return GpuInfo(True, name, capability, total_gib, total_gib * 0.95, capability >= (8, 0),
                       capability >= (8, 9), 1, capped)

    return make
