"""What a mixture-of-experts (and multimodal) config adds to a decoder's shape, read as transformers builds it.

Three layouts share the same counting: routed experts held as fused 3-D weights (transformers 5 holds Qwen3-MoE's,
Mixtral's and gpt-oss's experts as one `gate_up_proj` [experts, 2 x intermediate, hidden] and one `down_proj`
[experts, hidden, intermediate] per layer), a router (a linear layer of hidden x experts that stays 16-bit in every
stack nbkit plans: Unsloth keeps it out of 4-bit, gpt-oss's checkpoint keeps it out of MXFP4), and optional shared
experts that every token passes through (Qwen2-MoE's `shared_expert`, gated by one more hidden x 1 weight).
Only `experts_per_token` of the routed experts work on a token: the active parameters are what one token computes
with, the total what the card must hold.
"""
from __future__ import annotations

# config keys naming the routed experts, per family (Qwen-MoE, Mixtral / gpt-oss, DeepSeek-style)
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
TOP_K_KEYS = ("experts_per_token", "num_experts_per_tok", "moe_top_k")


def first(data: dict, keys, default=0):
    for key in keys:
        if data.get(key):
            return data[key]
    return default


def moe_fields(data: dict) -> dict:
    """The ModelSpec fields of an MoE config ({} for a dense one). A dict written from a ModelSpec (vars(spec), as
    the benchmarks store it) reads back the same."""
    experts = int(first(data, EXPERT_KEYS))
    if not experts:
        return {}
    layers = data["num_hidden_layers"]
    if "moe_layers" in data:
        moe_layers = int(data["moe_layers"])
    else:  # Qwen-MoE: every decoder_sparse_step-th layer is sparse unless listed in mlp_only_layers
        step = int(data.get("decoder_sparse_step") or 1)
        dense = set(data.get("mlp_only_layers") or [])
        moe_layers = sum(1 for i in range(layers) if i not in dense and (i + 1) % step == 0)
    shared = int(data.get("shared_expert_intermediate_size") or 0)
    return {
        "num_experts": experts,
        "experts_per_token": int(first(data, TOP_K_KEYS, 1)),
        # Qwen-MoE names the experts' width moe_intermediate_size (intermediate_size is its dense layers');
        # Mixtral and gpt-oss use intermediate_size for the experts
        "expert_intermediate_size": int(data.get("expert_intermediate_size") or data.get("moe_intermediate_size")
                                        or data["intermediate_size"]),
        "moe_layers": moe_layers,
        "shared_expert_intermediate_size": shared,
        # gpt-oss: every projection, expert and router carries a bias
        "expert_bias": bool(data.get("expert_bias", data.get("model_type") == "gpt_oss")),
        "experts_fused": bool(data.get("experts_fused", not split_experts(data))),
    }


def split_experts(data: dict) -> bool:
    """Unsloth's pre-quantized gpt-oss uploads ("-unsloth-bnb-4bit") hold one 4-bit Linear per expert
    (unsloth.models.loader_utils: its split expert classes), not transformers' fused 3-D weights."""
    quant = data.get("quantization_config") or {}
    return data.get("model_type") == "gpt_oss" and str(quant.get("quant_method", "")).lower() == "bitsandbytes"


def expert_format(data: dict) -> str:
    """"mxfp4" when the checkpoint holds its experts in MXFP4 (gpt-oss as OpenAI ships it), else ""."""
    if data.get("expert_format"):
        return str(data["expert_format"])
    quant = data.get("quantization_config") or {}
    return "mxfp4" if str(quant.get("quant_method", "")).lower() == "mxfp4" else ""


GLOBAL_EVERY = {"gemma2": 2, "gemma3": 6, "gemma3_text": 6}


def sliding_fields(data: dict) -> dict:
    """Layers that attend within a window (Gemma 2/3, gpt-oss, Mistral): {'sliding_window', 'sliding_layers'}."""
    window = int(data.get("sliding_window") or 0)
    if "sliding_layers" in data:
        return {"sliding_window": window, "sliding_layers": int(data["sliding_layers"])}
    if not window:
        return {}
    layers = data["num_hidden_layers"]
    kinds = data.get("layer_types")
    if kinds:
        sliding = sum(1 for k in kinds[:layers] if k == "sliding_attention")
    elif data.get("sliding_window_pattern") or data.get("model_type") in GLOBAL_EVERY:
        # Gemma 3: every 6th layer is global, Gemma 2: every 2nd (their classes' defaults)
        pattern = int(data.get("sliding_window_pattern") or GLOBAL_EVERY[data["model_type"]])
        sliding = sum(1 for i in range(layers) if (i + 1) % pattern)
    elif data.get("use_sliding_window") is False:
        sliding = 0
    else:
        sliding = layers
    return {"sliding_window": window, "sliding_layers": sliding}


def vision_params(data: dict) -> int:
    """Parameters of a SigLIP vision tower and its projector (Gemma 3's multimodal checkpoints): loaded beside the
    language model and kept in 16-bit. 0 for a text-only config."""
    if "vision_params" in data:
        return int(data["vision_params"])
    vision = data.get("vision_config")
    if not vision:
        return 0
    h, i = vision.get("hidden_size", 1152), vision.get("intermediate_size", 4304)
    layers = vision.get("num_hidden_layers", 27)
    per_layer = 4 * (h * h + h) + 2 * h * i + h + i + 4 * h  # attention, MLP (with biases), two layer norms
    patches = (vision.get("image_size", 896) // vision.get("patch_size", 14)) ** 2
    embed = 3 * vision.get("patch_size", 14) ** 2 * h + h + patches * h
    text_hidden = (data.get("text_config") or {}).get("hidden_size", h)
    projector = h * text_hidden + h  # Gemma 3: an RMS norm, then one matrix into the text model's width
    return layers * per_layer + embed + 2 * h + projector
