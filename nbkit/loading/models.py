"""load(): the model and tokenizer with LoRA attached — Unsloth on CUDA, transformers + peft elsewhere.

This is the only module that imports Unsloth, and it does so through backend.ensure() so that
Unsloth is always imported before transformers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import backend, hub, moe_lora
from ..gpus import fsdp
from ..planning import sharding
from ..planning.config import TINY_MODEL, RunConfig
from ..gpus.distributed import is_main, local_rank, world_size
from ..errors import ConfigError, HardwareError, ModelNotFoundError
from ..planning.hardware import GpuInfo, check_gpu, disk_free_gib, require_fp8
from ..planning.fp8 import fp8_copy_gib
from ..planning.recommend import NO_BF16, SHARDED_BACKEND, can_shard, check_fits, choose_parallelism
from ..specs import FUSED, curated_ids, fused_targets, spec_for


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    backend: str
    base_path: str
    config: RunConfig
    on_cuda: bool
    gpu: GpuInfo | None = None  # what it was loaded for (an emulated card: its abilities, e.g. no bf16)
    adapter_state: dict | None = None  # sharded runs: the trained adapters gathered whole, what rank 0 saves
    trained: Any = None  # nbkit.training.runs.RunState once trained: finished, stopped or interrupted at step k/N
    released: bool = False  # its GPU memory was given back when a newer model was loaded (nbkit.loading.gpu_session)

    @property
    def device(self):
        return next(self.model.parameters()).device


def resolve_model(model_id: str) -> str:
    """A local folder or Hub id that exists; the embedded tiny model is built on first use."""
    if model_id == TINY_MODEL:
        from .tiny import ensure_tiny_model

        return str(ensure_tiny_model())
    path = Path(model_id).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} exists but has no config.json, so it is not a model folder.")
        return str(path)
    hub.auto_config(model_id, curated_ids())  # raises a ModelNotFoundError that says which problem it is
    return model_id


def load(config: RunConfig, gpu: GpuInfo | None = None, check_memory: bool = True,
         keep_previous: bool = False) -> LoadedModel:
    """Load the base model in the configured precision and attach LoRA adapters to it.

    On a GPU, a model nbkit loaded earlier in this kernel is released first (said in one line), so a re-run
    cell does not stack models; `keep_previous=True` keeps it, and its memory then counts as in use."""
    gpu = _gpu_for_load(gpu, keep_previous)
    if config.quantization == "fp8":
        require_fp8(gpu)
    path = resolve_model(config.model)
    spec = spec_for(path)
    if spec.max_positions and config.max_seq_length > spec.max_positions and is_main():
        print(f"nbkit: warning: max_seq_length={config.max_seq_length} is beyond the {spec.max_positions} tokens "
              f"{config.model} was trained for (max_position_embeddings): rows past that are extrapolated, and "
              f"answer poorly unless the model is made for it. Use max_seq_length={spec.max_positions} or less.")
    config = resolve_parallelism(config, gpu, spec)
    name = backend.ensure(SHARDED_BACKEND if fsdp.sharded(config) else config.backend)
    if gpu.available and check_memory:
        check_fits(config, spec, gpu, backend=name, processes=world_size())
    if config.quantization == "fp8":
        _check_fp8_disk(spec)
    if fsdp.sharded(config):
        if not can_shard(gpu):
            raise HardwareError(f"{NO_BF16.format(name=gpu.name)}. Pick a model that fits one of these GPUs (each "
                                "then trains a whole copy, data-parallel), or GPUs with bf16 (A10, L4, A100, ...).")
        fsdp.check_host_memory(sum(sharding.weight_bytes(config.quantization, spec)))
    if name == "unsloth":
        model, tokenizer = _load_unsloth(config, path, gpu, spec.model_type)
    else:
        model, tokenizer = _load_transformers(config, path, gpu)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    loaded = LoadedModel(model, tokenizer, name, path, config, gpu.available, gpu)
    if gpu.available:
        from .gpu_session import register

        register(loaded)
    return loaded


def _gpu_for_load(gpu: GpuInfo | None, keep_previous: bool) -> GpuInfo:
    """The GPU as the new model will find it: models loaded before released (unless kept), memory re-read."""
    import torch

    released = None
    if torch.cuda.is_available() and (gpu is None or gpu.available):
        from .gpu_session import release_previous

        released = release_previous(keep_previous)
        if released and is_main():
            print(f"nbkit: {released}")
    if gpu is None or released:
        # under torchrun each process owns the GPU of its local rank; set it before anything allocates
        gpu = check_gpu(local_rank())
        if gpu.available:
            torch.cuda.set_device(local_rank())
    return gpu


def load_adapters(loaded: LoadedModel, folder: str | Path) -> None:
    """Put saved LoRA adapters (a run's lora_adapters or checkpoint) into `loaded`, whose LoRA shape matches."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("adapter_model.safetensors"))
    if not files:
        raise ConfigError(f"{folder} holds no adapter_model.safetensors: not saved LoRA adapters.")
    result = set_peft_model_state_dict(loaded.model, load_file(str(files[0])))
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing:
        raise ConfigError(f"The adapters in {folder} do not fit this model's LoRA layers (e.g. {missing[0]} is "
                          "missing): load them with the settings they were trained with.")


def resolve_parallelism(config: RunConfig, gpu: GpuInfo, spec) -> RunConfig:
    """Under a multi-process launch, `parallelism="auto"` becomes "ddp" or "fsdp" from the memory model (said
    once, by rank 0). Needs only the model's config.json: nothing heavy is imported yet."""
    engine = "unsloth" if gpu.available and backend.unsloth_installed() and config.backend != "transformers" \
        else "transformers"
    config, why = choose_parallelism(config, spec, gpu, world_size(), engine)
    if why and is_main():
        print(f"nbkit: parallelism={config.parallelism!r}: {why}.")
    return config


def launch_parallelism(config: RunConfig) -> RunConfig:
    """`config` with "auto" parallelism decided for this process of a launch, before the engine is imported or
    anything is loaded (what to import and which exports can be made depend on it)."""
    if world_size() <= 1 or config.parallelism != "auto":
        return config
    return resolve_parallelism(config, check_gpu(local_rank()), spec_for(resolve_model(config.model)))


def _check_fp8_disk(spec) -> None:
    """Unsloth converts a checkpoint that is not FP8 by writing an FP8 copy under the temp folder: fail before
    loading, not after minutes of it, when that copy cannot fit."""
    import tempfile

    if spec.checkpoint == "fp8":
        return
    folder = tempfile.gettempdir()
    need, free = fp8_copy_gib(spec), disk_free_gib(folder)
    if free < 1.1 * need:
        raise HardwareError(
            f"FP8 from this bf16 checkpoint writes an FP8 copy of about {need:.1f} GB to {folder}, which has "
            f"{free:.1f} GB free. Free disk space there (or point TMPDIR at a larger disk), pick a checkpoint "
            "already in FP8, or use quantization='4bit'.")


# Model types whose decoder layers Unsloth's per-block torch.compile cannot compile on the stack nbkit supports:
# Gemma 2's backward failed in Inductor (AssertionError in decompose_triton_kernel_wrapper_functional, torch 2.11,
# Unsloth 2026.10.9; bench/results/logs/device-s6-grid.log) on the first training step, on every card.
NO_BLOCK_COMPILE = {"gemma2"}


def unsloth_env(model_type: str, environ) -> dict[str, str]:
    """Environment Unsloth needs for this model type (read when the adapters are attached); the user's wins."""
    if model_type in NO_BLOCK_COMPILE and "UNSLOTH_BLOCK_COMPILE" not in environ:
        return {"UNSLOTH_BLOCK_COMPILE": "0"}
    return {}


def _load_unsloth(config: RunConfig, path: str, gpu: GpuInfo, model_type: str):
    import os

    from unsloth import FastLanguageModel

    os.environ.update(unsloth_env(model_type, os.environ))

    kwargs: dict[str, Any] = dict(
        # None lets Unsloth pick bf16 where the card has it; a rehearsed card without bf16 (T4) gets fp16
        model_name=path, max_seq_length=config.max_seq_length, dtype=None if gpu.bf16 else compute_dtype(True, gpu),
        load_in_4bit=config.quantization == "4bit",
        full_finetuning=False,
    )
    if config.quantization == "fp8":
        kwargs["load_in_fp8"] = True
    if world_size() > 1:  # data parallel: the whole model on this rank's GPU
        kwargs["device_map"] = {"": local_rank()}
    model, tokenizer = FastLanguageModel.from_pretrained(**kwargs)
    found = present_targets(model, config.target_modules)
    model = FastLanguageModel.get_peft_model(
        model, r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        # an MoE model's MLP names go through: Unsloth's MoE path puts LoRA on the fused experts (moe_lora)
        target_modules=moe_lora.unsloth_targets(found, model, config.target_modules), bias="none",
        use_gradient_checkpointing="unsloth" if config.gradient_checkpointing else False,
        random_state=config.seed, max_seq_length=config.max_seq_length,
    )
    _say_where_adapters_are(model)
    return model, tokenizer


def _say_where_adapters_are(model) -> None:
    """On an MoE model, one line saying where LoRA went (the experts, or not), read from the adapted model."""
    if moe_lora.is_moe(model) and is_main():
        print(f"nbkit: LoRA adapters on {moe_lora.adapter_places(model)}.")


def compute_dtype(on_cuda: bool, gpu: GpuInfo | None = None):
    import torch

    if not on_cuda:
        return torch.float32  # CPU kernels for bf16 matmul are slow or missing on many machines
    return torch.bfloat16 if gpu is None or gpu.bf16 else torch.float16


def _load_transformers(config: RunConfig, path: str, gpu: GpuInfo):
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    if config.quantization == "fp8":
        raise HardwareError("FP8 LoRA in nbkit runs through Unsloth: pip install 'nbkit[gpu]', or use '16bit'.")
    dtype = compute_dtype(gpu.available, gpu)
    sharded = fsdp.sharded(config)
    quant = None
    if config.quantization == "4bit":
        quant = fsdp.quantization_config(dtype) if sharded else BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    device = f"cuda:{local_rank()}" if gpu.available else "cpu"
    torch.manual_seed(config.seed)
    # sharded: into CPU memory; the trainer's FSDP then moves each GPU's share to it, so none holds the whole model
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, quantization_config=quant,
                                                 device_map={"": "cpu" if sharded else device})
    if quant is not None and not gpu.available:  # one 4-bit layout on CPU, the one that trains (nbkit.loading.bnb_cpu)
        from .bnb_cpu import keep_trainable_layout

        keep_trainable_layout(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if sharded:
        # no k-bit preparation (it would keep embeddings in fp32, twice the memory, on every GPU) and no model
        # checkpointing: FSDP checkpoints activations inside each layer it wraps (fsdp.trainer_args)
        model.config.use_cache = False
        model = get_peft_model(model, _lora_config(model, config))
        fsdp.place_quant_states(model, device)
        return model, tokenizer
    if quant is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, _lora_config(model, config))
    _say_where_adapters_are(model)
    return model, tokenizer



def _lora_config(model, config: RunConfig):
    from peft import LoraConfig

    experts = moe_lora.target_parameters(model, config.target_modules)
    if experts and config.quantization == "4bit":
        print("nbkit: bitsandbytes quantizes nn.Linear layers only: this model's fused 3-D expert weights stay in "
              "16-bit here (Unsloth on a CUDA GPU holds them in 4-bit).")
    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=present_targets(model, config.target_modules), bias="none", task_type="CAUSAL_LM",
                      **({"target_parameters": experts} if experts else {}))


def present_targets(model, wanted) -> list[str]:
    """The wanted LoRA targets this architecture has; an error listing the real ones if none match."""
    import torch

    # Quantized layers (bnb Linear4bit, FP8 linears) are not all nn.Linear subclasses.
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) or "Linear" in type(m).__name__}
    names.discard("lm_head")
    found = fused_targets(names, wanted)  # q/k/v asked for on a fused model trains its qkv_proj
    if not found:
        raise ConfigError(f"None of the LoRA target_modules {list(wanted)} exist in this model. Its linear layers "
                          f"are {sorted(names)}; pick from those.")
    covered = set(found) | {p for f in found for p in FUSED.get(f, ())}
    if moe_lora.is_moe(model):  # the MLP targets reach the experts (moe_lora); said once the adapters are on
        covered |= set(moe_lora.MLP_TARGETS)
    missing = [t for t in wanted if t not in covered]
    if missing:
        print(f"nbkit: this architecture has no {missing}; LoRA goes on {found}.")
    return found
