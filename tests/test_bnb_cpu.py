"""bnb_cpu: a CPU 4-bit layer keeps the layout that trains. bitsandbytes packs a layer for its AVX512-bf16
inference kernel at a forward without gradients, and that kernel has no backward."""
import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from nbkit.loading.bnb_cpu import keep_trainable_layout  # noqa: E402


def layer_4bit(seed: int = 0):
    torch.manual_seed(seed)
    layer = bnb.nn.Linear4bit(64, 64, bias=False, quant_type="nf4", compute_dtype=torch.float32)
    layer.weight = bnb.nn.Params4bit(torch.randn(64, 64), requires_grad=False, quant_type="nf4")
    return layer.to("cpu")  # quantizes


def input_grad(layer) -> torch.Tensor:
    x = torch.ones(2, 64, requires_grad=True)
    layer(x).sum().backward()
    return x.grad


def test_a_packed_layer_is_unpacked_and_passes_gradients_again():
    from bitsandbytes.functional import _convert_weight_packed_for_cpu, has_avx512bf16

    layer = layer_4bit()
    before = input_grad(layer)
    assert before.abs().sum() > 0
    w = layer.weight
    w.data, w.quant_state = _convert_weight_packed_for_cpu(w.data, w.quant_state)  # what an eval forward does
    if has_avx512bf16():  # the packed kernel runs only there: it gives no gradient to the layer's input
        x = torch.ones(2, 64, requires_grad=True)
        with pytest.warns(UserWarning, match="autograd kernel was not registered"):
            layer(x).sum().backward()
        assert x.grad is None
    assert keep_trainable_layout(layer) == 1 and keep_trainable_layout(layer) == 0
    assert not layer.weight.quant_state.packing_format_for_cpu and not layer.support_avx512bf16_for_cpu
    after = input_grad(layer)
    # the same weights but for the block scales, which the packing rounded to bf16 (relative error at most 2^-9):
    # d(sum of outputs)/dx_j = sum_i W_ij, so each gradient moves by at most 2^-9 · sum_i |W_ij|
    weights = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
    bound = 2**-9 * (1 + 2**-8) * weights.abs().sum(0)
    assert ((after - before).abs() <= bound).all() and not torch.equal(after, torch.zeros_like(after))


def test_a_forward_without_gradients_no_longer_packs():
    layer = layer_4bit().eval()
    keep_trainable_layout(layer)
    with torch.no_grad():
        layer(torch.ones(2, 64))
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    assert input_grad(layer.train()).abs().sum() > 0
