"""What one GPU holds when a model is sharded across several (FSDP2 through accelerate, QLoRA or 16-bit LoRA).

Pure arithmetic on byte counts, used by nbkit.planning.memory.estimate for `parallelism="fsdp"`:

- the frozen weights are split: each GPU keeps 1/N of them (4-bit weights are stored in the compute dtype, as
  FSDP needs, at the same bytes), except the 4-bit quantization statistics (absmax), which bitsandbytes keeps
  outside the parameters and so every GPU holds whole;
- the LoRA adapters, their gradients and Adam's states are split too;
- while a decoder layer computes, its weights are gathered whole (and the next one's, prefetched); so are the
  root module's (embeddings, final norm, LM head) while they compute;
- activations are per GPU, with that GPU's batch.
"""
from __future__ import annotations

from ..specs import ModelSpec

# 4-bit NF4: the packed weights (sharded) and the double-quantized absmax statistics (replicated)
PACKED_4BIT = 0.5
STATS_4BIT = 1 / 64 + 4 / (64 * 256)
# decoder layers gathered at once: the one computing and the one prefetched
GATHERED_LAYERS = 2
# Share of the root module's weights (embeddings and LM head) gathered at the peak. FSDP2 gathers them with the
# root, but the peak falls where only part of them is whole. Fitted, with the sharded activations constant
# (memory.CALIBRATION["transformers-fsdp"]), to two H200 runs (bench/results/sharded_8b.json, _32b.json: 8B at
# 2048 x 2 rows per GPU, 32B at 512 x 1) and rounded up; the 70B run is the check on a model the fit did not see.
ROOT_GATHERED = 0.4


def weight_bytes(quantization: str, spec: ModelSpec) -> tuple[float, float]:
    """(sharded, replicated) bytes of the frozen model: the part split across GPUs and the part each holds."""
    norms = (2 * spec.num_hidden_layers + 1) * spec.hidden_size
    dense = 2.0 * (spec.embedding_params + norms)  # embeddings, LM head and norms stay in 16-bit
    if quantization == "4bit":
        return PACKED_4BIT * spec.linear_params + dense, STATS_4BIT * spec.linear_params
    return 2.0 * spec.linear_params + dense, 0.0


def gathered_bytes(quantization: str, spec: ModelSpec, lora_params: int) -> float:
    """Weights gathered whole at the peak: ROOT_GATHERED of the root module's (embeddings and LM head) plus
    GATHERED_LAYERS decoder layers with their adapters (cast to 16-bit for the gather)."""
    per_weight = PACKED_4BIT if quantization == "4bit" else 2.0
    layer = per_weight * spec.linear_params / spec.num_hidden_layers
    adapters = 2.0 * lora_params / spec.num_hidden_layers
    return ROOT_GATHERED * 2.0 * spec.embedding_params + GATHERED_LAYERS * (layer + adapters)


def per_gpu(total: float, processes: int) -> float:
    """A sharded tensor's bytes on one GPU (FSDP pads each to a multiple of N; negligible at these sizes)."""
    return total / max(1, processes)
