import pytest

from nbkit import HardwareError
from nbkit.hardware import check_gpu, require_fp8, supports_fp8, tier_for


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
