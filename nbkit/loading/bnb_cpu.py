"""bitsandbytes' 4-bit layers on a CPU, kept in the layout that trains.

On a CPU with AVX512-bf16 (recent Xeons, this project's CI machines among them), bitsandbytes repacks a 4-bit layer
for its inference kernel the first time the layer runs without gradients: the sample before training, an eval.
That kernel (gemv_4bit) has no backward, and matmul_4bit takes it whenever a layer is packed, training or not. So a
model trained after such a forward passed no gradient through its frozen 4-bit weights: only the adapters whose
output joins the residual stream directly (o_proj, down_proj) learned, and a 1-step run moved 8 of 28 modules.
Packing also rounds the block scales to bf16. Writing a checkpoint calls state_dict(), which unpacks every layer:
that is why a checkpoint changed a 4-bit CPU run (step-3 loss 2.4783 with save_steps 1, 2.5478 with 50).

nbkit turns the repacking off when it loads a model, so a 4-bit CPU model keeps one layout, the one that trains,
for its whole life (CPUs without AVX512-bf16 never pack, so every CPU now computes the same thing).
"""
from __future__ import annotations


def keep_trainable_layout(model, say: bool = False) -> int:
    """Turn bitsandbytes' inference repacking off on every 4-bit layer of `model`, and unpack any layer already
    packed (its block scales stay rounded to bf16: unpacking cannot undo that), said in one line with `say`.
    Returns how many were unpacked."""
    try:
        from bitsandbytes.nn import Linear4bit
    except Exception:  # bitsandbytes missing or unusable here: nothing of it to keep
        return 0
    unpacked = 0
    for module in model.modules():
        if not isinstance(module, Linear4bit):
            continue
        module.support_avx512bf16_for_cpu = False
        weight = module.weight
        state = getattr(weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

            # what bitsandbytes' own Linear4bit._save_to_state_dict does before saving
            weight.data, weight.quant_state = _convert_weight_packed_for_cpu_inverse(weight.data, state)
            unpacked += 1
    if unpacked and say:
        print(f"nbkit: {unpacked} 4-bit layer(s) packed for bitsandbytes' CPU inference kernel, which has no "
              "backward, were unpacked for training.")
    return unpacked
