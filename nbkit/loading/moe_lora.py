"""LoRA on mixture-of-experts models: where the adapters go when the MLP is a set of fused 3-D expert weights.

transformers 5 holds Qwen3-MoE's, Mixtral's and gpt-oss's routed experts as two parameters per layer
(`mlp.experts.gate_up_proj` [experts, 2 x intermediate, hidden] and `mlp.experts.down_proj`), not as nn.Linear
modules, so `target_modules=["gate_proj", "up_proj", "down_proj"]` finds nothing there. PEFT (>= 0.17) trains them
through `target_parameters`: one LoRA pair of rank r per expert. Unsloth's get_peft_model asks for exactly that
itself (unsloth.models._utils.get_moe_target_parameters) when the MLP names are among its target_modules, so on
Unsloth nbkit passes the MLP names through and lets Unsloth resolve them; on transformers + peft nbkit names the
parameters itself. The MLP names must not reach PEFT's target_modules beside target_parameters: PEFT then wraps
the experts twice (measured on CPU, peft 0.21: twice the adapters on gate_up_proj).
"""
from __future__ import annotations

# the routed experts' fused weights, and which of the usual MLP targets reach each
EXPERT_PARAMS = {"gate_up_proj": ("gate_proj", "up_proj", "gate_up_proj"), "down_proj": ("down_proj",)}
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj", "gate_up_proj")


def expert_parameters(model) -> dict[str, str]:
    """{fused weight name: its path suffix under a decoder layer} for the 3-D expert weights `model` holds,
    e.g. {"gate_up_proj": "mlp.experts.gate_up_proj"}; {} for a dense model (or one whose experts are Linears)."""
    found: dict[str, str] = {}
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in EXPERT_PARAMS and ".experts." in name and param.dim() == 3 and leaf not in found:
            found[leaf] = name.split(".layers.", 1)[-1].split(".", 1)[-1]  # drop "model.layers.N."
    return found


def target_parameters(model, wanted) -> list[str]:
    """PEFT target_parameters for the expert weights the wanted MLP targets reach (gate/up -> gate_up_proj)."""
    experts = expert_parameters(model)
    return [path for leaf, path in experts.items() if set(EXPERT_PARAMS[leaf]) & set(wanted)]


def is_moe(model) -> bool:
    """Whether `model`'s config routes tokens to experts (however its experts are held: fused, 4-bit, Linears)."""
    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return any(getattr(text, key, 0) for key in ("num_experts", "num_local_experts", "n_routed_experts"))


def unsloth_targets(found: list[str], model, wanted) -> list[str]:
    """target_modules for Unsloth's get_peft_model: the Linear targets found, plus, on an MoE model, the wanted MLP
    names, so that Unsloth's own MoE path puts LoRA on the experts however it holds them (fused 3-D weights, its
    4-bit fused layout for gpt-oss, per-expert Linears)."""
    if not is_moe(model):
        return found
    return found + [t for t in wanted if t in MLP_TARGETS and t not in found]


def adapter_places(model) -> str:
    """Where the LoRA adapters of a PEFT model are, read from the model itself: "q_proj, k_proj (48 layers); the
    routed experts' fused weights (2 tensors a layer, 48 layers)". Expert adapters are named by their module
    (PEFT's wrapper of a 3-D weight), so they are counted rather than named."""
    layers: dict[str, set] = {}
    expert_tensors: dict[str, int] = {}
    for name, _ in model.named_parameters():
        if ".lora_A." not in name:
            continue
        path = name.split(".lora_A.", 1)[0].replace(".base_layer", "")
        layer = path.split(".layers.", 1)[-1].split(".", 1)[0] if ".layers." in path else "-"
        if ".experts" in path:
            expert_tensors[layer] = expert_tensors.get(layer, 0) + 1
            continue
        layers.setdefault(path.rsplit(".", 1)[-1], set()).add(layer)
    parts = [f"{', '.join(layers)} ({max(len(v) for v in layers.values())} layers)"] if layers else []
    if expert_tensors:
        parts.append(f"the routed experts' weights ({max(expert_tensors.values())} adapted tensor(s) a layer, "
                     f"{len(expert_tensors)} layers)")
    return "; ".join(parts) or "nowhere"
