"""What a checkpoint holds in 4-bit: a pre-quantized checkpoint's 16-bit layers, Unsloth's dynamic 4-bit quants."""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

# Unsloth loads an id such as unsloth/Llama-3.2-1B-Instruct in 4-bit from "<id>-unsloth-bnb-4bit", a dynamic quant
# that keeps some layers in 16-bit, where one exists. Until that quant's config is in the local Hugging Face cache
# (after its first download) nbkit cannot say which layers, and plans this much more for the 4-bit projections:
# Unsloth's own figure for its dynamic quants, "under 10 % more VRAM than BitsAndBytes 4-bit". No dynamic quant was
# measured for nbkit (the device has no network), so this is a stated assumption (docs/memory-model.md).
DYNAMIC_4BIT_ALLOWANCE = 0.10
DYNAMIC_SUFFIX = "-unsloth-bnb-4bit"


def as_unsloth_loads_it(spec, model: str):  # spec: a ModelSpec, returned as another
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


def skipped_params(spec, config: dict) -> int:  # spec: a ModelSpec (nbkit.specs)
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
