"""Sharded training: a model split across GPUs with FSDP2, through the HF Trainer's `fsdp` options (accelerate),
on transformers + peft + bitsandbytes: Unsloth does not shard a model.

nbkit's part is what the engines leave to their user: deciding when to shard (nbkit.planning.recommend), loading the
model so that no GPU ever holds all of it (into CPU memory, 4-bit weights stored in the compute dtype as FSDP
needs), telling the trainer to shard, and gathering the trained adapters back into whole tensors for verifying
and saving. Every function that gathers is a collective: every rank must call it, in the same order.
"""
from __future__ import annotations

import os
from typing import Any

from ..planning.config import RunConfig
from .distributed import world_size
from ..errors import HardwareError
from ..planning.hardware import GIB

# the activation-checkpoint wrapper (FSDP's, or any the user's model carries) adds this to parameter names
_CHECKPOINT_PREFIX = "_checkpoint_wrapped_module."


def sharded(config: RunConfig) -> bool:
    """True when this process is one of several sharing one model (parallelism resolved to "fsdp")."""
    return config.parallelism == "fsdp" and world_size() > 1


def quantization_config(dtype):
    """NF4 with double quantization, as for one GPU, but the packed weights stored in the compute dtype: FSDP
    shards only floating-point tensors, and one storage dtype lets a layer's weights gather in one piece."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)


def check_host_memory(weights_bytes: float, available_bytes: float | None = None) -> None:
    """Each process on this machine loads the whole (quantized) model into CPU memory before FSDP hands every
    GPU its share; fail before minutes of loading when the machine's memory cannot hold them all."""
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size()))
    need = local * weights_bytes * 1.1
    if need > available_bytes:
        raise HardwareError(
            f"Sharding loads the model into CPU memory once per GPU process before splitting it: {local} × "
            f"{weights_bytes / GIB:.1f} GiB, but this machine has {available_bytes / GIB:.1f} GiB free. Close other "
            "programs, use fewer processes per machine, or pick a smaller model.")


def place_quant_states(model, device) -> None:
    """Put every 4-bit layer's quantization statistics on this rank's device, and keep them on the layer itself.

    The model is loaded into CPU memory; FSDP moves the packed weights (parameters) to the GPU, but bitsandbytes
    keeps the statistics outside the parameters, and recovers them from the layer once FSDP has replaced the
    parameter with its gathered copy."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None) or getattr(module, "quant_state", None)
        if state is not None and hasattr(state, "to"):
            state.to(device)
            module.quant_state = state


def trainer_args(config: RunConfig) -> dict[str, Any]:
    """The SFTConfig options that shard: FSDP2, parameters resharded after each layer's forward, whole (not
    per-rank) state dicts so a checkpoint loads without FSDP, and the model's own (non-reentrant) gradient
    checkpointing, as the peft/accelerate FSDP-QLoRA recipe sets it. transformers suggests FSDP's activation
    checkpointing instead; measured on two H200s (8B shape, 2048 x 2 rows per GPU, bench/sharded.py) it used
    less memory but trained 21 % slower (8,415 vs 10,670 tokens/s)."""
    return dict(fsdp=True, gradient_checkpointing=bool(config.gradient_checkpointing),
                gradient_checkpointing_kwargs={"use_reentrant": False},
                fsdp_config={"version": 2, "reshard_after_forward": True, "activation_checkpointing": False,
                             "state_dict_type": "FULL_STATE_DICT", "cpu_ram_efficient_loading": False})


def enable_on_cpu(trainer) -> None:
    """accelerate shards only on accelerators: on CPU (gloo) it quietly falls back to data parallelism. torch's
    FSDP2 itself runs on CPU, so hand accelerate the same plugin the trainer built: the CPU path (tests, CI)
    then shards exactly as GPUs do."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin_args = trainer.args.fsdp_plugin_args
    if plugin_args is None or trainer.is_fsdp_enabled:
        return
    state = trainer.accelerator.state
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**plugin_args)
    state.distributed_type = DistributedType.FSDP
    trainer.is_fsdp_enabled = True


def whole(tensor):
    """A parameter's full value: sharded ones are gathered from every rank (a collective)."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def plain_name(name: str) -> str:
    """A parameter's name as the model had it before FSDP wrapped its layers."""
    return name.replace(_CHECKPOINT_PREFIX, "")


def local_fraction(model) -> float:
    """Share of the model's parameter elements this rank holds: 1/N of the sharded ones, all of the rest
    (1.0 when nothing is sharded)."""
    mine = total = 0
    for p in model.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        mine += local.numel()
        total += p.numel()
    return mine / total if total else 1.0


def full_adapter_state(model) -> dict[str, Any]:
    """The trained LoRA tensors, whole and on the CPU, under the model's own parameter names: gathered on every
    rank, so that rank 0 can save them alone afterwards (save_adapters)."""
    return {name: whole(p).detach().cpu() for name, p in model.named_parameters() if "lora_" in name}


def save_adapters(model, directory, state: dict[str, Any]) -> None:
    """What peft's save_pretrained writes (adapter_model.safetensors and adapter_config.json), from adapters
    gathered by full_adapter_state. peft picks a model's adapter tensors by its module names, which FSDP's
    activation checkpointing prefixes: peft selects them here under those names, and the file gets the plain
    ones, so the adapters load into an unsharded model."""
    import copy
    from pathlib import Path

    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    tensors = {plain_name(k): v.contiguous() for k, v in get_peft_model_state_dict(model, state_dict=state).items()}
    if not tensors:
        raise RuntimeError("no LoRA tensors matched the model's adapter layers; nothing would be saved")
    save_file(tensors, str(Path(directory) / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = copy.copy(model.peft_config["default"])
    config.inference_mode = True
    config.save_pretrained(str(directory))
