"""Model architecture specs (config.json excerpts), so memory can be predicted without downloading weights."""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from ..errors import ModelNotFoundError
from ..resources import TINY_CHAT_PATH, TINY_MODEL
from . import moe
from .quantized import (DYNAMIC_4BIT_ALLOWANCE, DYNAMIC_SUFFIX, as_unsloth_loads_it, checkpoint_kind,  # noqa: F401
                        skipped_params)

# LoRA on every linear layer of attention and MLP: RunConfig's default target_modules
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class ModelSpec:
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool
    head_dim: int
    fused_projections: bool = False
    qk_norm: bool = False  # RMS-normed queries and keys (Qwen3, Gemma 3): both q/k and their normed copies are kept
    name: str = ""
    # how the weights are stored on disk: "bf16" (or fp16/fp32: loaded as 16-bit), "bnb-4bit" (pre-quantized
    # bitsandbytes) or "fp8"; it decides what loading costs (memory.load_peak)
    checkpoint: str = "bf16"
    max_positions: int = 0  # the context it was trained for (max_position_embeddings); 0 when not known
    # decoder projections a 4-bit checkpoint keeps in 16-bit (its quantization_config's llm_int8_skip_modules, as
    # Unsloth's dynamic 4-bit quants do): they cost 2 bytes a weight, not half a byte
    unquantized_params: int = 0
    # a Hub id Unsloth loads in 4-bit from its dynamic quant: "counted" (unquantized_params read from that quant's
    # config in the local Hugging Face cache) or "allowance" (not readable here: DYNAMIC_4BIT_ALLOWANCE is planned)
    dynamic_4bit: str = ""
    # mixture of experts (nbkit.specs.moe): routed experts per MoE layer, how many work on each token, their width,
    # how many layers are MoE (the others have a dense MLP of intermediate_size), shared experts' width
    num_experts: int = 0
    experts_per_token: int = 0
    expert_intermediate_size: int = 0
    moe_layers: int = 0
    shared_expert_intermediate_size: int = 0
    expert_bias: bool = False  # gpt-oss: biases on the experts and the router
    expert_format: str = ""  # "mxfp4": the checkpoint holds its experts in MXFP4 (gpt-oss as OpenAI ships it)
    # experts held as one 3-D weight per projection (transformers 5), dequantized whole in 4-bit; False: one Linear
    # per expert (Unsloth's pre-quantized gpt-oss "-unsloth-bnb-4bit" upload), dequantized one expert at a time
    experts_fused: bool = True
    attention_bias: bool = False  # biases on q/k/v (and o, except Qwen2's)
    sliding_window: int = 0  # tokens a sliding-window layer attends to (Gemma 3, gpt-oss, Mistral)
    sliding_layers: int = 0  # how many layers attend within that window
    vision_params: int = 0  # a multimodal checkpoint's vision tower and projector, loaded in 16-bit (Gemma 3)

    @property
    def softcapped_attention(self) -> bool:
        """Attention logits capped by tanh (Gemma 2): fused attention kernels cannot compute them."""
        return self.model_type == "gemma2"

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def projection_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear projection in one decoder layer. Fused architectures (Phi-3 as
        Microsoft ships it) hold q/k/v in one qkv_proj and gate/up in one gate_up_proj: the same weights, but a
        LoRA on a fused projection has one A matrix where three separate ones would have three."""
        h, i = self.hidden_size, self.intermediate_size
        if self.fused_projections:
            return {"qkv_proj": (h, self.q_dim + 2 * self.kv_dim), "o_proj": (self.q_dim, h),
                    "gate_up_proj": (h, 2 * i), "down_proj": (i, h)}
        return {"q_proj": (h, self.q_dim), "k_proj": (h, self.kv_dim), "v_proj": (h, self.kv_dim),
                "o_proj": (self.q_dim, h), "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0 and self.moe_layers > 0

    @property
    def dense_layers(self) -> int:
        """Layers whose MLP is dense (all of a dense model's; those an MoE model keeps dense)."""
        return self.num_hidden_layers - (self.moe_layers if self.is_moe else 0)

    def attention_shapes(self) -> dict[str, tuple[int, int]]:
        return {k: v for k, v in self.projection_shapes().items() if k not in MLP_NAMES}

    def expert_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of ONE expert's fused projections: the 3-D weights hold num_experts of these."""
        h, i = self.hidden_size, self.expert_intermediate_size
        return {"gate_up_proj": (h, 2 * i), "down_proj": (i, h)} if self.is_moe else {}

    def shared_expert_shapes(self) -> dict[str, tuple[int, int]]:
        h, i = self.hidden_size, self.shared_expert_intermediate_size
        return {"gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)} if i else {}

    @property
    def expert_params(self) -> int:
        """Routed experts' weights in all MoE layers (biases included): the bulk of an MoE model."""
        per_expert = sum(a * b + (b if self.expert_bias else 0) for a, b in self.expert_shapes().values())
        return per_expert * self.num_experts * self.moe_layers

    @property
    def router_params(self) -> int:
        """Routers (hidden x experts, per MoE layer) and shared-expert gates: these stay 16-bit."""
        if not self.is_moe:
            return 0
        per_layer = self.hidden_size * self.num_experts + (self.num_experts if self.expert_bias else 0)
        per_layer += self.hidden_size if self.shared_expert_intermediate_size else 0
        return per_layer * self.moe_layers

    @property
    def largest_projection(self) -> int:
        """Weights in the biggest single tensor: what is dequantized, or loaded in bf16, one at a time (a fused
        3-D expert weight is one tensor: all its experts at once)."""
        dense = max(a * b for a, b in self.projection_shapes().values())
        per_tensor = self.num_experts if self.experts_fused else 1
        experts = max((a * b * per_tensor for a, b in self.expert_shapes().values()), default=0)
        return max(dense, experts)

    @property
    def linear_params(self) -> int:
        """Parameters in the decoder layers' projections and experts: the part 4-bit and FP8 quantize."""
        attention = sum(a * b for a, b in self.attention_shapes().values())
        mlp = sum(a * b for k, (a, b) in self.projection_shapes().items() if k in MLP_NAMES)
        shared = sum(a * b for a, b in self.shared_expert_shapes().values())
        experts = sum(a * b for a, b in self.expert_shapes().values()) * self.num_experts
        return (attention * self.num_hidden_layers + mlp * self.dense_layers
                + (shared + experts) * (self.moe_layers if self.is_moe else 0))

    @property
    def expert_linear_params(self) -> int:
        """The routed experts' weights without biases (the part of linear_params the experts hold)."""
        return sum(a * b for a, b in self.expert_shapes().values()) * self.num_experts * self.moe_layers

    @property
    def active_params(self) -> int:
        """Parameters one token computes with: all but the routed experts it is not sent to."""
        if not self.is_moe:
            return self.total_params
        idle = self.expert_params * (self.num_experts - self.experts_per_token) // self.num_experts
        return self.total_params - idle

    @property
    def small_16bit_params(self) -> int:
        """Kept in 16-bit whatever the quantization, besides embeddings: norms, biases, routers, attention sinks,
        a vision tower."""
        return (self.norm_params + self.bias_params + self.router_params + self.vision_params
                + (self.num_attention_heads * self.num_hidden_layers if self.model_type == "gpt_oss" else 0)
                + (self.expert_params - self.expert_linear_params))

    @property
    def norm_params(self) -> int:
        per_layer = self.hidden_size * (4 if self.model_type in FOUR_NORM_TYPES else 2)
        per_layer += 2 * self.head_dim if self.qk_norm else 0
        return per_layer * self.num_hidden_layers + self.hidden_size

    @property
    def bias_params(self) -> int:
        """Attention biases: q/k/v (Qwen2), q/k/v/o (attention_bias: gpt-oss, some Llamas)."""
        if self.model_type in ("qwen2", "qwen2_moe"):
            per_layer = self.q_dim + 2 * self.kv_dim
        elif self.attention_bias:
            per_layer = self.q_dim + 2 * self.kv_dim + self.hidden_size
        else:
            return 0
        return per_layer * self.num_hidden_layers

    def describe(self) -> str:
        """"30.5B-parameter mixture of experts (3.3B active: 8 of 128 experts a token)" or "8.0B-parameter model"."""
        if not self.is_moe:
            return f"{self.total_params / 1e9:.1f}B-parameter model"
        return (f"{self.total_params / 1e9:.1f}B-parameter mixture of experts ({self.active_params / 1e9:.1f}B "
                f"active: {self.experts_per_token} of {self.num_experts} experts a token)")

    @property
    def embedding_params(self) -> int:
        """Input embeddings plus an untied LM head; these stay in 16-bit."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def total_params(self) -> int:
        return self.linear_params + self.embedding_params + self.small_16bit_params

    def lora_params(self, r: int, targets=ALL_LINEAR) -> int:
        """LoRA weights for `targets`. On MoE layers the MLP targets reach the fused experts as PEFT's
        target_parameters do (one A and one B of rank r per expert: r x experts x (in + out)), as Unsloth's
        get_moe_target_parameters asks for them."""
        shapes = self.projection_shapes()
        trained = fused_targets(shapes, targets)
        attention = sum(r * sum(shapes[t]) for t in trained if t not in MLP_NAMES)
        mlp = sum(r * sum(shapes[t]) for t in trained if t in MLP_NAMES)
        total = attention * self.num_hidden_layers + mlp * self.dense_layers
        if self.is_moe:
            experts = self.expert_shapes()
            per_layer = sum(r * self.num_experts * sum(experts[t]) for t in moe_targets(targets))
            shared = self.shared_expert_shapes()
            per_layer += sum(r * sum(shared[t]) for t in targets if t in shared)
            total += per_layer * self.moe_layers
        return total


MLP_NAMES = ("gate_proj", "up_proj", "down_proj", "gate_up_proj")
FOUR_NORM_TYPES = {"gemma2", "gemma3", "gemma3_text"}  # norms before and after both attention and MLP


def moe_targets(targets) -> list[str]:
    """The fused expert weights the MLP targets reach: gate or up -> gate_up_proj, down -> down_proj."""
    wanted = set(targets)
    found = ["gate_up_proj"] if wanted & {"gate_proj", "up_proj", "gate_up_proj"} else []
    return found + (["down_proj"] if "down_proj" in wanted else [])


# a fused projection is trained when any of the projections it holds is asked for
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def fused_targets(present, wanted) -> list[str]:
    """The wanted LoRA targets among the `present` projection names, fused ones standing in for their parts."""
    found = [t for t in wanted if t in present]
    found += [f for f, parts in FUSED.items() if f in present and f not in found and set(parts) & set(wanted)]
    return found


# model types whose attention normalises q and k per head (their configs do not say so: the class does)
QK_NORM_TYPES = {"qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2"}


def from_config_dict(data: dict, name: str = "") -> ModelSpec:
    outer = data  # a multimodal config (Gemma 3) holds the language model's in text_config
    data = data.get("text_config", data) if "hidden_size" not in data else data
    for key in ("quantization_config", "tie_word_embeddings"):  # said once, on the outer config
        if key in outer and key not in data:
            data = {**data, key: outer[key]}
    try:
        heads = data["num_attention_heads"]
        spec = ModelSpec(
            model_type=data.get("model_type", "unknown"),
            hidden_size=data["hidden_size"],
            intermediate_size=data["intermediate_size"],
            num_hidden_layers=data["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=data.get("num_key_value_heads") or heads,
            vocab_size=data["vocab_size"],
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            head_dim=data.get("head_dim") or data["hidden_size"] // heads,
            # Microsoft's Phi-3/Phi-4 checkpoints fuse q/k/v and gate/up (Unsloth's uploads are "Llamafied")
            fused_projections=bool(data.get("fused_projections", data.get("model_type") == "phi3")),
            qk_norm=bool(data.get("qk_norm", data.get("model_type") in QK_NORM_TYPES)),
            name=name,
            checkpoint=checkpoint_kind(data, name),
            max_positions=int(data.get("max_position_embeddings") or 0),
            expert_format=moe.expert_format(data),
            attention_bias=bool(data.get("attention_bias", False)),
            vision_params=moe.vision_params(outer),
            **moe.moe_fields(data), **moe.sliding_fields(data),
        )
        return replace(spec, unquantized_params=skipped_params(spec, data))
    except KeyError as exc:
        raise ModelNotFoundError(f"{name or 'config'} lacks {exc} needed to predict memory; "
                                 "it may not be a decoder-only language model.") from exc


@lru_cache(maxsize=1)
def _curated() -> dict[str, dict]:
    return json.loads((HERE / "models.json").read_text())


def curated_ids() -> list[str]:
    return list(_curated())


def known_without_hub(model: str) -> bool:
    """Whether spec_for(model) answers without the network: a curated id, the tiny model, or a local folder."""
    table = {k.lower() for k in _curated()}
    return model.lower() in table or model == TINY_MODEL or (Path(model).expanduser() / "config.json").exists()


def spec_for(model: str) -> ModelSpec:
    """The spec of a curated id, a local model folder, the tiny model, or (online) any Hub id."""
    table = _curated()
    if model in table:
        return as_unsloth_loads_it(from_config_dict(table[model], model), model)
    for key, data in table.items():  # ids are case-insensitive on the Hub
        if key.lower() == model.lower():
            return as_unsloth_loads_it(from_config_dict(data, key), key)
    if model == TINY_MODEL:  # the package's own copy: its config is what loading.tiny copies to the cache
        model = str(TINY_CHAT_PATH)
    cfg = Path(model).expanduser() / "config.json"
    if cfg.exists():
        return from_config_dict(json.loads(cfg.read_text()), model)
    from ..loading.hub import auto_config

    return as_unsloth_loads_it(from_config_dict(auto_config(model, curated_ids()).to_dict(), model), model)
