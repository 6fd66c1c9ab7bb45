"""Model architecture specs (config.json excerpts), so memory can be predicted without downloading weights."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from ..errors import ModelNotFoundError
from ..resources import TINY_CHAT_PATH, TINY_MODEL

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
    def largest_projection(self) -> int:
        """Weights in the biggest single projection: what is dequantized, or loaded in bf16, one at a time."""
        return max(a * b for a, b in self.projection_shapes().values())

    @property
    def linear_params(self) -> int:
        """Parameters in the decoder layers' projections: the part 4-bit and FP8 quantize."""
        per_layer = sum(a * b for a, b in self.projection_shapes().values())
        return per_layer * self.num_hidden_layers

    @property
    def embedding_params(self) -> int:
        """Input embeddings plus an untied LM head; these stay in 16-bit."""
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def total_params(self) -> int:
        norms = (2 * self.num_hidden_layers + 1) * self.hidden_size
        return self.linear_params + self.embedding_params + norms

    def lora_params(self, r: int, targets=ALL_LINEAR) -> int:
        shapes = self.projection_shapes()
        per_layer = sum(r * (shapes[t][0] + shapes[t][1]) for t in fused_targets(shapes, targets))
        return per_layer * self.num_hidden_layers


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
    data = data.get("text_config", data) if "hidden_size" not in data else data
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
        )
        return replace(spec, unquantized_params=skipped_params(spec, data))
    except KeyError as exc:
        raise ModelNotFoundError(f"{name or 'config'} lacks {exc} needed to predict memory; "
                                 "it may not be a decoder-only language model.") from exc


# Unsloth loads an id such as unsloth/Llama-3.2-1B-Instruct in 4-bit from "<id>-unsloth-bnb-4bit", a dynamic quant
# that keeps some layers in 16-bit, where one exists. Until that quant's config is in the local Hugging Face cache
# (after its first download) nbkit cannot say which layers, and plans this much more for the 4-bit projections:
# Unsloth's own figure for its dynamic quants, "under 10 % more VRAM than BitsAndBytes 4-bit". No dynamic quant was
# measured for nbkit (the device has no network), so this is a stated assumption (docs/memory-model.md).
DYNAMIC_4BIT_ALLOWANCE = 0.10
DYNAMIC_SUFFIX = "-unsloth-bnb-4bit"


def as_unsloth_loads_it(spec: ModelSpec, model: str) -> ModelSpec:
    """`spec` for a Hub id with what Unsloth's 4-bit load of it keeps in 16-bit: counted from its dynamic quant's
    config when the local Hugging Face cache holds it (no network is used), else marked for the allowance. Local
    folders, pre-quantized ids and ids outside unsloth/ load as they are."""
    if not model.lower().startswith("unsloth/") or spec.checkpoint != "bf16" or Path(model).expanduser().exists():
        return spec
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model + DYNAMIC_SUFFIX, "config.json")
    except Exception:  # noqa: BLE001 — a cache that cannot be read is a cache without the file
        cached = None
    if isinstance(cached, str):
        kept = skipped_params(replace(spec, checkpoint="bnb-4bit"), json.loads(Path(cached).read_text()))
        return replace(spec, unquantized_params=kept, dynamic_4bit="counted")
    return replace(spec, dynamic_4bit="allowance")


def skipped_params(spec: ModelSpec, config: dict) -> int:
    """Weights of the decoder projections the checkpoint's quantization config leaves unquantized. An entry matches
    a module as transformers 5 matches it (quantizers_utils.should_convert_module, restated here so that planning
    imports no transformers): a pattern matching from the start of the module's full name, or its ending
    ("model.layers.3.mlp.down_proj", "model.layers.*.mlp", "down_proj")."""
    quant = config.get("quantization_config") or {}
    skip = quant.get("llm_int8_skip_modules") or []
    if not skip or spec.checkpoint != "bnb-4bit":
        return 0
    shapes = spec.projection_shapes()
    where = {name: "mlp" if name in ("gate_proj", "up_proj", "down_proj", "gate_up_proj") else "self_attn"
             for name in shapes}
    total = 0
    for layer in range(spec.num_hidden_layers):
        for proj, (a, b) in shapes.items():
            module = f"model.layers.{layer}.{where[proj]}.{proj}"
            if any(re.match(f"{key}\\.", module) or re.match(key, module) or module.endswith(key) for key in skip):
                total += a * b
    return total


def checkpoint_kind(config: dict, name: str = "") -> str:
    """"bnb-4bit", "fp8" or "bf16", from the config's quantization_config, else from the Hub id's naming."""
    quant = config.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")).lower()
    if method == "bitsandbytes" and quant.get("load_in_4bit", quant.get("_load_in_4bit")):
        return "bnb-4bit"
    if "fp8" in method or str(quant.get("fmt", "")).lower().startswith("float8"):
        return "fp8"
    lowered = name.lower()
    if "bnb-4bit" in lowered:
        return "bnb-4bit"
    if lowered.endswith("fp8") or "-fp8-" in lowered:
        return "fp8"
    return "bf16"


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
