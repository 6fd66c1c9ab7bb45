"""Predict peak GPU memory of a LoRA run before loading anything; pick settings that fit a GPU.

The formulas count bytes per tensor class. The few empirical constants (layers of activations live at the peak,
Gemma 2's score bytes, the CUDA context) are fitted to measured peaks by bench/fit_memory.py, Unsloth's on the
grid of real cards (bench/grid.py); docs/memory-model.md records the fit and its accuracy on unseen models.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .config import RunConfig
from .hardware import GIB, GpuInfo
from .fp8 import fp8_copy_gib
from ..specs import ModelSpec
from . import allocator, memory_moe, sharding
from .breakdown import Breakdown

# bytes per quantized-linear weight, quantization constants included
WEIGHT_BYTES = {
    "16bit": 2.0,
    # NF4: 4 bits + an 8-bit absmax per 64 weights + an fp32 scale per 256 absmax (double quantization)
    "4bit": 0.5 + 1 / 64 + 4 / (64 * 256),
    "fp8": 1.0 + 4 / 4096,  # e4m3 + a per-row scale (1B measured: 1.47 GiB allocated, as predicted)
}
OPTIMIZER_BYTES = {"adamw_8bit": 2.0, "paged_adamw_8bit": 2.0, "adamw_torch": 8.0,
                   "adamw_torch_fused": 8.0, "sgd": 0.0, "adafactor": 4.0}


@dataclass(frozen=True)
class Calibration:
    """Empirical constants for one backend, fitted to H100 measurements (docs/memory-model.md)."""
    act_gc: float  # with gradient checkpointing: decoder layers' worth of activations live at the peak
    act_no_gc: float  # without: fraction of every layer's activations that backward keeps
    keeps_checkpoints: float  # 1 if each layer's checkpointed input stays on the GPU, 0 if offloaded to CPU
    logits_bytes: float  # bytes per (token x vocab entry) at the loss's peak
    quantized_embed_bytes: float  # bytes per embedding/LM-head parameter when the body is 4-bit
    lora_bytes: float  # bytes per LoRA parameter (peft keeps adapters in fp32)
    slack: float  # allocator caching, as a fraction of activations + logits
    fixed_gib: float  # workspaces, compiled graphs, small buffers inside the reservation
    context_gib: float  # CUDA context + loaded kernels: outside torch's reservation, inside the card
    # torch's allocator reserves more than it hands out (cached blocks of freed tensors of other sizes); these bound
    # the reservation as a multiple of what the plan allocates, training and loading, and are fitted by
    # bench/fit_memory.py to every stored peak (bench/stored_peaks.py), so the plan checks what will be reserved
    reserve_factor: float = 1.0
    load_factor: float = 1.0


# `act_gc` (layers of activations live at the peak with gradient checkpointing) is not set by hand: it is what
# bench/fit_memory.py fits (the smallest value, on a 0.05 grid, that predicts no measured peak under it; Unsloth's
# on the grid's full-length probes of nine architectures, padding-free as nbkit trains; tests/test_memory_grid.py
# re-runs the fit and compares). Unsloth offloads each layer's
# checkpoint to CPU and fuses the loss (no full logits); plain transformers + TRL 1.15 keeps checkpoints on the
# GPU and chunks the loss, and with 4-bit (bitsandbytes + peft's k-bit preparation) keeps about twice as much per
# token and fp32 embeddings. FP8 also needs fewer fixed workspaces.
# The CUDA context is measured, not assumed: the largest seen in the H100 records (bench/memory_accuracy.py's
# `context_gib`, GPU in use minus torch's reservation), rounded up to 0.05 GiB; tests/test_memory.py re-derives it.
_UNSLOTH = Calibration(act_gc=1.0, act_no_gc=1.0, keeps_checkpoints=0.0, logits_bytes=0.0,
                       quantized_embed_bytes=2.0, lora_bytes=4.0, slack=0.05, fixed_gib=0.25, context_gib=0.85,
                       reserve_factor=1.04)
_HF = Calibration(act_gc=1.8, act_no_gc=1.0, keeps_checkpoints=1.0, logits_bytes=0.0,
                  quantized_embed_bytes=4.0, lora_bytes=4.0, slack=0.05, fixed_gib=0.25, context_gib=0.8)
CALIBRATION = {
    "unsloth": _UNSLOTH,
    "transformers": _HF,
    "transformers-kbit": replace(_HF, act_gc=2.6, keeps_checkpoints=2.2, load_factor=1.1),
    "unsloth-kbit": replace(_UNSLOTH, act_gc=1.05, reserve_factor=1.06, load_factor=1.04),
    "unsloth-fp8": replace(_UNSLOTH, act_gc=1.95, fixed_gib=0.15, reserve_factor=1.02),
    # sharded (FSDP2 + transformers + peft, no k-bit preparation: embeddings stay 16-bit): fitted to two H200
    # runs with nbkit.planning.sharding.ROOT_GATHERED (see there), about half the activations of a one-GPU transformers run
    "transformers-fsdp": replace(_HF, act_gc=1.0, keeps_checkpoints=0.55, reserve_factor=1.23),
}


def calibration(backend: str, quantization: str) -> Calibration:
    base = "unsloth" if backend == "unsloth" else "transformers"
    if quantization == "fp8" and f"{base}-fp8" in CALIBRATION:
        return CALIBRATION[f"{base}-fp8"]
    kbit = f"{base}-kbit"
    return CALIBRATION[kbit] if quantization == "4bit" and kbit in CALIBRATION else CALIBRATION[base]


def activation_bytes_per_token_layer(spec: ModelSpec) -> float:
    """bf16 tensors one decoder layer keeps per token for the LoRA backward pass.

    Counted: the two norm inputs and outputs (4h), q and the attention output (2 q_dim), k and v
    (2 kv_dim), and the MLP's gate, up, activation and product (4 intermediate). With q/k norms (Qwen3) the
    normed q and k are kept beside the raw ones (q_dim + kv_dim more).
    """
    h = spec.hidden_size
    qk = spec.q_dim + spec.kv_dim if spec.qk_norm else 0
    return 2.0 * (4 * h + 2 * spec.q_dim + 2 * spec.kv_dim + memory_moe.mlp_activation_elements(spec) + qk)


# Gemma 2 caps its attention logits (tanh), which the fused attention kernels cannot do: without flash-attn,
# Unsloth pads the batch and computes every layer's scores in full (a compiled matmul, tanh, softmax), and the
# layer being recomputed keeps this many bytes per score (batch x heads x length x length) for its backward. Fitted
# by bench/fit_memory.py to the grid's Gemma 2 runs (bench/results/grid*.json), as act_gc is.
SCORE_BYTES = 4.5
# Each padded batch brings score tensors of a new shape, and the blocks freed from the last ones stay reserved: on
# the grid, Gemma 2's reservation ran above its allocation by up to this many times the scores it kept (T4, fp16).
# Fitted by bench/fit_memory.py so that the plan covers every reserved peak measured.
SCORE_FRAGMENTATION = 1.0


def attention_scores_bytes(spec: ModelSpec, backend: str, batch: int, seq: int) -> float:
    """Bytes of attention scores kept at the peak: only where the scores are materialised (see SCORE_BYTES)."""
    if backend != "unsloth" or not spec.softcapped_attention or _flash_attn_installed():
        return 0.0
    return batch * spec.num_attention_heads * float(seq) ** 2 * SCORE_BYTES


def _flash_attn_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def estimate(config: RunConfig, spec: ModelSpec, backend: str = "unsloth", on_cuda: bool = True,
             batch_size: int | None = None, seq_len: int | None = None, processes: int = 1,
             bf16: bool = True) -> Breakdown:
    """Predicted peak VRAM of training `config` on `spec`, assuming every sequence fills max_seq_length.
    `bf16=False` plans a card without bf16 (T4), where Unsloth trains some families in float32 (memory_moe).

    Memory is per GPU. With config.parallelism == "fsdp" the model is sharded across `processes` GPUs
    (nbkit.planning.sharding says what each holds); otherwise every GPU holds the whole model (one GPU, or DDP)."""
    sharded = config.parallelism == "fsdp"
    cal = CALIBRATION["transformers-fsdp"] if sharded else calibration(backend, config.quantization)
    n = processes if sharded else 1
    batch = batch_size or config.batch_size
    tokens = batch * (seq_len or config.max_seq_length)
    n_lora = spec.lora_params(config.lora_r, config.target_modules)
    if sharded:
        split, whole = sharding.weight_bytes(config.quantization, spec)
        weights = sharding.per_gpu(split, n) + whole
        gathered = sharding.gathered_bytes(config.quantization, spec, n_lora)
        optimizer_bytes = OPTIMIZER_BYTES.get(config.resolved_optimizer(on_cuda, sharded=True), 8.0)
    else:
        embed_bytes = cal.quantized_embed_bytes if config.quantization == "4bit" else 2.0
        weights = (_linear_bytes(config.quantization, spec, backend) + embed_bytes * spec.embedding_params
                   + memory_moe.small_weights_bytes(spec))
        gathered = 0.0
        optimizer_bytes = OPTIMIZER_BYTES.get(config.resolved_optimizer(on_cuda), 8.0)
    lora = sharding.per_gpu(n_lora * cal.lora_bytes, n)
    optimizer = sharding.per_gpu(n_lora * optimizer_bytes, n)
    per_layer = activation_bytes_per_token_layer(spec)
    if config.gradient_checkpointing:
        layers_live = cal.act_gc
        checkpoints = cal.keeps_checkpoints * tokens * 2.0 * spec.hidden_size * spec.num_hidden_layers
    else:
        layers_live = cal.act_no_gc * spec.num_hidden_layers
        checkpoints = 0.0
    activations = (tokens * per_layer * layers_live + checkpoints) * memory_moe.activation_scale(spec, bf16, backend)
    scores = attention_scores_bytes(spec, backend, batch, seq_len or config.max_seq_length)
    activations += scores
    logits = tokens * spec.vocab_size * cal.logits_bytes
    # quantized layers are dequantized to bf16 one matrix at a time, forward and backward
    dequant = 2.0 * 2 * spec.largest_projection if config.quantization != "16bit" else 0.0
    dequant += memory_moe.expert_lora_delta_bytes(spec, config.quantization, config.target_modules)
    overhead = cal.fixed_gib * GIB + dequant + cal.slack * (activations + logits)
    load, note = load_peak(config.quantization, spec, weights, lora)
    part = Breakdown(*(x / GIB for x in (weights, lora, lora, optimizer, activations, logits, overhead)),
                     cuda_context=cal.context_gib, load=load * cal.load_factor / GIB, load_note=note,
                     gathered=gathered / GIB, fragmentation=scores * SCORE_FRAGMENTATION / GIB)
    # where attention scores are materialised (Gemma 2) their fragmentation, fitted on those runs, stands for the cache
    # without expandable segments (CUDA touched before nbkit could set them) the default allocator reserves more
    reserve = cal.reserve_factor * allocator.reserve_multiplier()
    return part if scores else replace(part, cache=(reserve - 1.0) * part.allocated)


LOAD_BUFFERS = 16 * 1024**2


def _linear_bytes(quantization: str, spec: ModelSpec, backend: str) -> float:
    """The decoder projections' weights as they load: a 4-bit checkpoint's 16-bit layers (a local pre-quantized
    folder's, or the dynamic quant Unsloth loads for a Hub id) at 2 bytes, and the allowance where those are unknown
    (nbkit.specs.as_unsloth_loads_it)."""
    from ..specs import DYNAMIC_4BIT_ALLOWANCE

    per_weight = WEIGHT_BYTES[quantization]
    if quantization != "4bit":
        return per_weight * spec.linear_params
    dynamic = backend == "unsloth" and spec.dynamic_4bit
    kept = spec.unquantized_params if spec.checkpoint == "bnb-4bit" or dynamic == "counted" else 0
    extra = DYNAMIC_4BIT_ALLOWANCE if dynamic == "allowance" else 0.0
    return per_weight * (spec.linear_params - kept) * (1 + extra) + 2.0 * kept


def load_peak(quantization: str, spec: ModelSpec, weights: float, lora: float) -> tuple[float, str]:
    """Bytes torch holds by the end of models.load (weights and the LoRA adapters attached), and what holds them
    when that is more than the weights.

    Loading streams the checkpoint tensor by tensor, so beside the loaded weights it holds one projection in
    bf16 while it is placed (and quantized, for 4-bit). FP8 from a checkpoint that is not FP8 is the exception:
    Unsloth loads the whole model in bf16 on the GPU, quantizes it and writes an FP8 copy to disk. Measured on
    an H100 (bench/load_peak.py, Llama 3.1 8B shape, bench/results/load_peak_8b.json): 5.50 GiB allocated for
    4-bit, 15.15 for 16-bit, 15.00 for FP8 from bf16.
    """
    largest = spec.largest_projection
    # plus small buffers (RoPE tables, RNG state): 1B's loads measured 0.5 MB over weights + LoRA + one projection
    streamed = weights + lora + 2.0 * largest + LOAD_BUFFERS
    if quantization == "fp8" and spec.checkpoint != "fp8":
        whole = 2.0 * spec.total_params + 4.0 * largest  # bf16 model + one fp32 tensor while quantizing
        return max(whole, streamed), (f"converting to FP8 first loads the whole model in bf16 ({whole / GIB:.1f} "
                                      f"GiB) and writes an FP8 copy to disk (about {fp8_copy_gib(spec):.1f} GB)")
    return streamed, ""


def card_bf16(gpu: GpuInfo) -> bool:
    """Whether a plan for `gpu` computes in bf16 (a CPU plan is for a GPU that has it)."""
    return gpu.bf16 or not gpu.available


def usage_vs_capacity(gpu: GpuInfo, part: Breakdown) -> tuple[float, float]:
    """(predicted, capacity): a cap set by cap_memory() bounds torch's reservation; a card bounds everything.
    Memory already in use when the GPU was checked (gpu.held_gib: a model still loaded, other processes) is
    not there for the run."""
    if gpu.capped_gib:
        return part.peak_reserved, max(0.0, gpu.capped_gib - gpu.held_gib)
    return part.peak_total, max(0.0, gpu.total_gib - gpu.held_gib)


# recommend() plans to allocate at most this share of the GPU, for what no stored run measured (longer runs, other
# processes starting later); what the allocator reserves beyond the allocation is planned for itself (see fits)
SAFETY_MARGIN = 0.85


def fits(part: Breakdown, gpu: GpuInfo, margin: float = SAFETY_MARGIN) -> bool:
    """What the allocator is planned to reserve (Calibration.reserve_factor and load_factor: at least every stored
    run's reservation) fits the GPU, and what the plan allocates stays within `margin` of it (check_fits passes 1.0:
    the reservation alone)."""
    reserved, capacity = usage_vs_capacity(gpu, part)
    return reserved <= capacity and reserved - part.cache <= capacity * margin


def largest_batch(config: RunConfig, spec: ModelSpec, gpu: GpuInfo, backend: str = "unsloth",
                  margin: float = SAFETY_MARGIN, upper: int = 256, processes: int = 1) -> int:
    """The largest per-device batch predicted to fit (0 if not even batch 1 fits)."""
    best = 0
    batch = 1
    while batch <= upper and fits(estimate(config, spec, backend, batch_size=batch, processes=processes,
                                           bf16=card_bf16(gpu)), gpu, margin):
        best = batch
        batch += 1
    return best
