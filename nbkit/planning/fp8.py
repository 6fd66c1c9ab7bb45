"""FP8 LoRA: where it was measured faster than 16-bit, and the disk its conversion from a bf16 checkpoint takes.

recommend() picks FP8 only on this evidence and quotes it; nothing here is estimated where it can be measured.
"""
from __future__ import annotations

from .hardware import GIB
from ..specs import ModelSpec


# FP8 LoRA steady-state speed relative to bf16 LoRA, measured on an H100 with the batches nbkit trains with now
# (padding-free; bench/throughput.py's bf16 and fp8 variants, one process each, same call; bench/fp8_vs_bf16.py,
# bench/results/fp8_vs_bf16.json, whose current rows tests/test_fp8.py checks equal to these):
# (model, billions of parameters, seq, batch, speed-up). Session 2's 1.17-1.21x at 8B were padded batches.
FP8_MEASURED: list[tuple[str, float, int, int, float]] = [
    ("Llama-3.2-1B", 1.24, 2048, 4, 0.517), ("Llama-3.2-1B", 1.24, 4096, 8, 0.764),
    ("Llama-3.1-8B", 8.03, 2048, 4, 0.832), ("Llama-3.1-8B", 8.03, 4096, 8, 0.882),
    ("Qwen2.5-14B", 14.77, 2048, 4, 0.844), ("Qwen2.5-14B", 14.77, 4096, 8, 0.911),
]
FP8_WORTH_IT = 1.05  # below this the one-off FP8 compilation (minutes) is not repaid


def fp8_evidence(spec: ModelSpec, seq: int, batch: int) -> tuple[bool, str]:
    """Whether FP8 is expected to train faster than 16-bit here, and the measurement that says so.

    A size within 20% of a measured one uses that model's measurement at the nearest tokens per step ("measured");
    a size above every measured one uses the largest's ("expected from", since FP8's gain grows with matrix
    size); a size between measured ones, where they disagree, is not picked.
    """
    billions = spec.total_params / 1e9
    sizes = sorted({m[1] for m in FP8_MEASURED})
    near = [b for b in sizes if abs(b - billions) <= 0.2 * b]
    if near:
        size, measured = near[0], True
    elif billions > sizes[-1]:
        size, measured = sizes[-1], False
    else:
        return False, f"FP8 was not measured at {billions:.1f}B parameters"
    tokens = seq * batch
    name, b, mseq, mbatch, speedup = min((m for m in FP8_MEASURED if m[1] == size),
                                         key=lambda m: (abs(m[2] * m[3] - tokens), abs(m[2] - seq)))
    point = f"{speedup:.2f}× on the {name} shape ({b:.1f}B) at {mseq} × {mbatch} tokens per step, H100"
    if measured:
        return speedup > FP8_WORTH_IT, f"FP8 LoRA was measured {point}"
    return speedup > FP8_WORTH_IT, f"FP8 LoRA is expected faster from {point} (not measured at {billions:.1f}B)"


def fp8_copy_gib(spec: ModelSpec) -> float:
    """Disk the FP8 copy of a bf16 checkpoint takes: 1 byte per projection weight, embeddings kept in bf16."""
    return (spec.linear_params + 2.0 * spec.embedding_params) / GIB
