"""The memory model's mixture-of-experts terms (nbkit.planning.memory uses them for every spec; dense specs add 0).

An MoE layer holds all its experts (weights in the precision they are held: 4-bit where Unsloth quantizes them),
but a token's activations pass through only experts_per_token of them: what backward keeps per token is the router's
logits and weights, and, per chosen expert, its copy of the token's hidden state, gate, up, their product and the
expert's output. A 4-bit fused expert weight is one tensor of all its experts, dequantized to 16-bit whole while it
computes (spec.largest_projection counts it). The router, a multimodal checkpoint's vision tower, norms and biases
stay 16-bit.
"""
from __future__ import annotations

from ..specs import ModelSpec


def mlp_activation_elements(spec: ModelSpec) -> float:
    """16-bit elements one layer's MLP keeps per token for backward, averaged over the layers: a dense layer's
    gate, up, activation and product (4 x intermediate); an MoE layer's, per chosen expert, the token's routed copy
    and the expert's output (2 x hidden) besides its own 4 x expert width (6 for gpt-oss), plus the router's logits
    (fp32: 2 elements each) and top-k weights."""
    layers = spec.num_hidden_layers
    dense = 4 * spec.intermediate_size * spec.dense_layers
    if not spec.is_moe:
        return dense / layers
    k = spec.experts_per_token
    # gpt-oss's expert activation clamps gate and up and gates with a sigmoid (swiglu_limit): two intermediates more
    kept = 6 if spec.model_type == "gpt_oss" else 4
    routed = k * (kept * spec.expert_intermediate_size + 2 * spec.hidden_size) + 2 * spec.num_experts + 2 * k
    shared = 4 * spec.shared_expert_intermediate_size
    return (dense + (routed + shared) * spec.moe_layers) / layers


# Unsloth 2026.10.9 trains these families in float32 on a card without bf16 (its FORCE_FLOAT32 list, unsloth_zoo
# model_lists: fp16 gives them NaN gradients): what backward keeps per token is then 4 bytes an element, not 2.
# Measured on a rehearsed T4 (bench/results/moe_fit.json, Gemma 3 4B, 4-bit): 1.8x the bf16 plan's bytes per token.
FLOAT32_ON_FP16_CARDS = ("gemma3", "gemma3_text", "gemma3n", "gpt_oss", "qwen3_moe", "glm4_moe")


def activation_scale(spec: ModelSpec, bf16: bool, backend: str) -> float:
    """2 where Unsloth computes in float32 because the card has no bf16 (see FLOAT32_ON_FP16_CARDS), else 1."""
    return 2.0 if backend == "unsloth" and not bf16 and spec.model_type in FLOAT32_ON_FP16_CARDS else 1.0


def expert_lora_delta_bytes(spec: ModelSpec, quantization: str, targets) -> float:
    """A LoRA on a fused 3-D expert weight (PEFT's target_parameters) adds B x A to the whole weight, all experts
    at once, while the layer computes: one 16-bit tensor the size of each adapted weight of a layer. 4-bit layers
    already plan the weight dequantized whole (memory.estimate's dequant term), which holds it; 16-bit ones did
    not. Measured: Qwen3-MoE at 16-bit planned 1.1 GiB under at every batch without it (bench/results/moe_fit.json)."""
    from ..specs import moe_targets

    if not spec.is_moe or quantization == "4bit":
        return 0.0
    shapes = spec.expert_shapes()
    return sum(2.0 * spec.num_experts * shapes[t][0] * shapes[t][1] for t in moe_targets(targets))


def small_weights_bytes(spec: ModelSpec) -> float:
    """Routers, a vision tower, biases and sinks, kept in 16-bit whatever the quantization (norms, a few KB, are
    left out as the dense calibration always left them)."""
    return 2.0 * (spec.small_16bit_params - spec.norm_params)


# Families whose whole run held more on the device than their plan (bench/results/moe_full.json: the planned batch
# ran out of memory in workflow.run, though train.run on random-id rows stayed inside it; docs/memory-model.md,
# "Known gap"). Their plans say so until the cause is measured.
PLAN_UNDER_IN_WORKFLOW = ("qwen3_moe", "mixtral")


def plan_caveat(spec: ModelSpec) -> str:
    """One sentence for a plan known to fall short for this family ("" otherwise)."""
    if spec.model_type not in PLAN_UNDER_IN_WORKFLOW:
        return ""
    return ("Measured runs of this family held more than this plan; if a step runs out of memory, nbkit halves the "
            "batch, doubles the accumulation and goes on.")
