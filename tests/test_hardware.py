import sys
from types import SimpleNamespace

import pytest

from nbkit import HardwareError
from nbkit.planning.hardware import GIB, check_gpu, require_fp8, supports_fp8, tier_for


@pytest.mark.parametrize("gib, tier", [(6.0, "8GB"), (7.6, "8GB"), (11.9, "8GB"), (15.0, "16GB"), (22.5, "24GB"),
                                       (40.0, "24GB"), (79.2, "H100"), (139.8, "H100")])
def test_tier_is_largest_covered(gib, tier):
    assert tier_for(gib) == tier


def test_fp8_needs_ada_or_hopper():
    assert supports_fp8((8, 9)) and supports_fp8((9, 0))
    assert not supports_fp8((8, 6)) and not supports_fp8((7, 5))


def test_no_gpu_is_reported_plainly():
    gpu = check_gpu()  # CI machines have no GPU
    if gpu.available:
        pytest.skip("this machine has a GPU")
    assert gpu.tier is None
    assert "No CUDA GPU found" in gpu.summary()
    with pytest.raises(HardwareError, match="no CUDA GPU. Use quantization='16bit' or '4bit'"):
        require_fp8(gpu)


def test_fp8_on_an_older_gpu_says_what_to_use(fake_gpu):
    with pytest.raises(HardwareError, match=r"Tesla T4 is 7.5. Use quantization='4bit'"):
        require_fp8(fake_gpu(15.0, (7, 5)))
    require_fp8(fake_gpu(80.0, (9, 0), "H100"))  # no error


def test_cap_shows_in_tier(fake_gpu):
    gpu = fake_gpu(80.0, (9, 0), "H100", capped=16.0)
    assert gpu.usable_gib == 16.0 and gpu.tier == "16GB"
    assert "capped to 16.0 GiB" in gpu.summary()


class FakeNvml:
    """The pynvml calls nbkit makes, over a table of physical GPUs (used, total) in bytes."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus):
        self.gpus, self.inits = gpus, 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetMemoryInfo(self, handle):
        used, total = self.gpus[handle]
        return SimpleNamespace(used=used, total=total)


@pytest.fixture
def nvml(monkeypatch):
    from nbkit.planning import hardware

    fake = FakeNvml([(g * GIB, 80 * GIB) for g in (1, 2, 30, 40)])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(hardware, "_nvml_ready", False)
    return fake


def test_every_gpu_is_read_in_cuda_numbering(nvml, monkeypatch):
    from nbkit.planning.hardware import all_gpus_memory, per_gpu_line

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [round(u) for _, u, _ in all_gpus_memory()] == [1, 2, 30, 40]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,2")  # this process's GPU0 is the card NVML calls 3
    readings = all_gpus_memory()
    assert [(i, round(u)) for i, u, _ in readings] == [(0, 40), (1, 30)]
    assert per_gpu_line(readings) == "GPU0 40.0/80 · GPU1 30.0/80 GiB"
    assert nvml.inits == 1  # initialised once, not per reading


def test_progress_of_a_data_parallel_run_shows_every_gpu(nvml, monkeypatch):
    from nbkit.ui.progress import TrainingProgress

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    cb = TrainingProgress(mode="text", world_size=2)
    cb.training_started(10)
    assert "GPU0 30.0/80 · GPU1 40.0/80 GiB" in cb.stats_line()
    single = TrainingProgress(mode="text", world_size=1)
    single.training_started(10)
    assert "GPU0" not in single.stats_line()


def test_without_nvml_there_is_no_per_gpu_reading(monkeypatch):
    from nbkit.planning.hardware import all_gpus_memory

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails, as on a machine without the package
    assert all_gpus_memory() is None
