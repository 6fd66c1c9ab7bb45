"""Predict peak GPU memory of a LoRA run before loading anything; pick settings that fit a GPU.

The formulas count bytes per tensor class. The few empirical constants (activation multipliers,
logits bytes, allocator slack, CUDA context) are calibrated on an H100 by bench/memory_accuracy.py;
docs/memory-model.md records the fit.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from .config import RunConfig
from .errors import HardwareError
from .hardware import GIB, GpuInfo
from .fp8 import fp8_copy_gib, fp8_evidence
from .specs import ModelSpec

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


# `act_gc` (layers of activations live at the peak with gradient checkpointing) is not set by hand: it is what
# bench/fit_memory.py fits to every measured H100 peak (the smallest value, on a 0.05 grid, that predicts none
# under its measurement; tests/test_memory.py re-runs the fit and compares). Unsloth offloads each layer's
# checkpoint to CPU and fuses the loss (no full logits); plain transformers + TRL 1.15 keeps checkpoints on the
# GPU and chunks the loss, and with 4-bit (bitsandbytes + peft's k-bit preparation) keeps about twice as much per
# token and fp32 embeddings. FP8 also needs fewer fixed workspaces.
# The CUDA context is measured, not assumed: the largest seen in the H100 records (bench/memory_accuracy.py's
# `context_gib`, GPU in use minus torch's reservation), rounded up to 0.05 GiB; tests/test_memory.py re-derives it.
_UNSLOTH = Calibration(act_gc=1.65, act_no_gc=1.0, keeps_checkpoints=0.0, logits_bytes=0.0,
                       quantized_embed_bytes=2.0, lora_bytes=4.0, slack=0.05, fixed_gib=0.25, context_gib=0.85)
_HF = Calibration(act_gc=1.8, act_no_gc=1.0, keeps_checkpoints=1.0, logits_bytes=0.0,
                  quantized_embed_bytes=4.0, lora_bytes=4.0, slack=0.05, fixed_gib=0.25, context_gib=0.8)
CALIBRATION = {
    "unsloth": _UNSLOTH,
    "transformers": _HF,
    "transformers-kbit": replace(_HF, act_gc=2.6, keeps_checkpoints=2.2),
    "unsloth-kbit": replace(_UNSLOTH, act_gc=1.6),
    "unsloth-fp8": replace(_UNSLOTH, act_gc=1.6, fixed_gib=0.15),
}


def calibration(backend: str, quantization: str) -> Calibration:
    base = "unsloth" if backend == "unsloth" else "transformers"
    if quantization == "fp8" and f"{base}-fp8" in CALIBRATION:
        return CALIBRATION[f"{base}-fp8"]
    kbit = f"{base}-kbit"
    return CALIBRATION[kbit] if quantization == "4bit" and kbit in CALIBRATION else CALIBRATION[base]


@dataclass(frozen=True)
class Breakdown:
    """Predicted peak GPU memory in GiB, by what holds it."""
    weights: float
    lora: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    overhead: float
    cuda_context: float
    load: float = 0.0  # reserved while the model loads (before training); see load_peak()
    load_note: str = ""  # what loading holds, when it is more than the weights

    @property
    def trainable(self) -> float:
        return self.lora + self.gradients + self.optimizer

    @property
    def reserved(self) -> float:
        """What torch's allocator reserves at the peak (torch.cuda.max_memory_reserved)."""
        return self.total - self.cuda_context

    @property
    def total(self) -> float:
        """What the card must hold: the reservation plus the CUDA context."""
        return (self.weights + self.lora + self.gradients + self.optimizer + self.activations + self.logits
                + self.overhead + self.cuda_context)

    @property
    def limiting_phase(self) -> str:
        """'loading' when loading needs more than training (FP8 converted from a bf16 checkpoint), else
        'training'."""
        return "loading" if self.load > self.reserved else "training"

    @property
    def peak_reserved(self) -> float:
        """The larger of the two phases' reservations: what a cap on torch's memory must allow."""
        return max(self.reserved, self.load)

    @property
    def peak_total(self) -> float:
        """The larger phase plus the CUDA context: what the card must hold at some point of the run."""
        return self.peak_reserved + self.cuda_context

    def groups(self) -> dict[str, float]:
        """The parts a gauge draws: weights, LoRA+optimizer, activations, logits, overhead."""
        return {"weights": self.weights, "LoRA + optimizer": self.trainable, "activations": self.activations,
                "logits": self.logits, "overhead": self.overhead + self.cuda_context}

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "reserved": self.reserved, "peak_total": self.peak_total,
                "limiting_phase": self.limiting_phase}

    def table(self) -> str:
        rows = [f"{k:<18}{v:8.2f} GiB" for k, v in self.groups().items()]
        rows += [f"{'training peak':<18}{self.total:8.2f} GiB",
                 f"{'loading peak':<18}{self.load + self.cuda_context:8.2f} GiB"]
        note = f" ({self.load_note})" if self.limiting_phase == "loading" else ""
        return "\n".join([*rows, f"{'total':<18}{self.peak_total:8.2f} GiB  limit: {self.limiting_phase}{note}"])


def activation_bytes_per_token_layer(spec: ModelSpec) -> float:
    """bf16 tensors one decoder layer keeps per token for the LoRA backward pass.

    Counted: the two norm inputs and outputs (4h), q and the attention output (2 q_dim), k and v
    (2 kv_dim), and the MLP's gate, up, activation and product (4 intermediate).
    """
    h, i = spec.hidden_size, spec.intermediate_size
    return 2.0 * (4 * h + 2 * spec.q_dim + 2 * spec.kv_dim + 4 * i)


def estimate(config: RunConfig, spec: ModelSpec, backend: str = "unsloth", on_cuda: bool = True,
             batch_size: int | None = None, seq_len: int | None = None) -> Breakdown:
    """Predicted peak VRAM of training `config` on `spec`, assuming every sequence fills max_seq_length."""
    cal = calibration(backend, config.quantization)
    batch = batch_size or config.batch_size
    tokens = batch * (seq_len or config.max_seq_length)
    embed_bytes = cal.quantized_embed_bytes if config.quantization == "4bit" else 2.0
    weights = WEIGHT_BYTES[config.quantization] * spec.linear_params + embed_bytes * spec.embedding_params
    n_lora = spec.lora_params(config.lora_r, config.target_modules)
    lora = n_lora * cal.lora_bytes
    optimizer = n_lora * OPTIMIZER_BYTES.get(config.resolved_optimizer(on_cuda), 8.0)
    per_layer = activation_bytes_per_token_layer(spec)
    if config.gradient_checkpointing:
        layers_live = cal.act_gc
        checkpoints = cal.keeps_checkpoints * tokens * 2.0 * spec.hidden_size * spec.num_hidden_layers
    else:
        layers_live = cal.act_no_gc * spec.num_hidden_layers
        checkpoints = 0.0
    activations = tokens * per_layer * layers_live + checkpoints
    logits = tokens * spec.vocab_size * cal.logits_bytes
    # quantized layers are dequantized to bf16 one matrix at a time, forward and backward
    dequant = 2.0 * 2 * spec.largest_projection if config.quantization != "16bit" else 0.0
    overhead = cal.fixed_gib * GIB + dequant + cal.slack * (activations + logits)
    load, note = load_peak(config.quantization, spec, weights, lora)
    return Breakdown(*(x / GIB for x in (weights, lora, lora, optimizer, activations, logits, overhead)),
                     cuda_context=cal.context_gib, load=load / GIB, load_note=note)


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
    streamed = weights + lora + 2.0 * largest
    if quantization == "fp8" and spec.checkpoint != "fp8":
        whole = 2.0 * spec.total_params + 4.0 * largest  # bf16 model + one fp32 tensor while quantizing
        return max(whole, streamed), (f"converting to FP8 first loads the whole model in bf16 ({whole / GIB:.1f} "
                                      f"GiB) and writes an FP8 copy to disk (about {fp8_copy_gib(spec):.1f} GB)")
    return streamed, ""


def usage_vs_capacity(gpu: GpuInfo, part: Breakdown) -> tuple[float, float]:
    """(predicted, capacity): a cap set by cap_memory() bounds torch's reservation; a card bounds everything."""
    if gpu.capped_gib:
        return part.peak_reserved, gpu.capped_gib
    return part.peak_total, gpu.total_gib


# Plan to use at most this share of the GPU: sequences longer than the data's typical ones, and
# fragmentation over long runs, eat into the rest.
SAFETY_MARGIN = 0.85


def fits(part: Breakdown, gpu: GpuInfo, margin: float = SAFETY_MARGIN) -> bool:
    predicted, capacity = usage_vs_capacity(gpu, part)
    return predicted <= capacity * margin


def largest_batch(config: RunConfig, spec: ModelSpec, gpu: GpuInfo, backend: str = "unsloth",
                  margin: float = SAFETY_MARGIN, upper: int = 256) -> int:
    """The largest per-device batch predicted to fit (0 if not even batch 1 fits)."""
    best = 0
    batch = 1
    while batch <= upper and fits(estimate(config, spec, backend, batch_size=batch), gpu, margin):
        best = batch
        batch += 1
    return best


def check_fits(config: RunConfig, spec: ModelSpec, gpu: GpuInfo, backend: str = "unsloth") -> Breakdown:
    """Raise a HardwareError with a concrete fix when the run is predicted not to fit this GPU."""
    part = estimate(config, spec, backend)
    if fits(part, gpu, margin=1.0):
        return part
    predicted, capacity = usage_vs_capacity(gpu, part)
    rec = recommend(spec, gpu, base=config, backend=backend)
    advice = (f"Try: {rec.summary()}" if rec.fits else
              "Even 4-bit with batch 1 and 512 tokens does not fit: pick a smaller model.")
    raise HardwareError(
        f"{spec.name or 'This model'} with {config.quantization}, batch {config.batch_size} and "
        f"{config.max_seq_length} tokens needs about {predicted:.1f} GiB, but this GPU has {capacity:.1f} GiB "
        f"(tier {gpu.tier}). {advice} Pass check_memory=False to try anyway."
    )


@dataclass(frozen=True)
class Recommendation:
    config: RunConfig
    breakdown: Breakdown
    fits: bool
    reason: str

    def summary(self) -> str:
        c = self.config
        return (f"quantization={c.quantization!r}, lora_r={c.lora_r}, max_seq_length={c.max_seq_length}, "
                f"batch_size={c.batch_size}, grad_accum={c.grad_accum}")


def recommend(spec: ModelSpec, gpu: GpuInfo, base: RunConfig | None = None, backend: str = "unsloth",
              target_effective_batch: int = 8, quantizations=None, processes: int = 1) -> Recommendation:
    """Settings that fit `gpu` with a safety margin, with a short reason a workshop attendee can follow.

    `quantizations` limits the choice (e.g. to the one the user asked for); by default nbkit chooses.
    Memory is per GPU; with `processes` data-parallel GPUs the accumulation shrinks so that the global batch
    (batch x accumulation x processes) stays near `target_effective_batch`.
    """
    base = base or RunConfig(model=spec.name or RunConfig().model)
    options = ["fp8"] if gpu.fp8 else []
    options += ["16bit", "4bit"] if gpu.usable_gib >= 20 else ["4bit", "16bit"]
    if quantizations:
        options = [q for q in quantizations if q != "fp8" or gpu.fp8]
    passed_over = ""  # why FP8 was not chosen, when the card has it
    for seq in (2048, 1024, 512):
        for quant in options:
            for r in (16, 8):
                cfg = base.replace(quantization=quant, lora_r=r, lora_alpha=r, max_seq_length=seq,
                                   gradient_checkpointing=True)
                batch = min(largest_batch(cfg, spec, gpu, backend), target_effective_batch)
                if quant == "fp8" and not quantizations:
                    skip = _fp8_pass_over(cfg, spec, gpu, backend, batch)
                    if skip:
                        passed_over = passed_over or skip
                        continue
                # 16-bit is only worth it with room for a real batch; otherwise 4-bit is the safer pick
                if batch == 0 or (quant != "4bit" and batch < 2 and not quantizations):
                    continue
                cfg = cfg.replace(batch_size=batch,
                                  grad_accum=max(1, target_effective_batch // (batch * processes)))
                reason = _reason(cfg, spec, gpu, processes)
                if passed_over and quant != "fp8":
                    reason += f" FP8 was passed over: {passed_over}."
                return Recommendation(cfg, estimate(cfg, spec, backend), True, reason)
    cfg = base.replace(quantization="4bit", lora_r=8, lora_alpha=8, max_seq_length=512, batch_size=1,
                       grad_accum=target_effective_batch)
    part = estimate(cfg, spec, backend)
    return Recommendation(cfg, part, False,
                          f"{spec.name or 'This model'} needs about {part.peak_total:.1f} GiB even in 4-bit with "
                          f"batch 1; this GPU has {gpu.usable_gib:.1f} GiB. Choose a smaller model.")


def _fp8_pass_over(cfg: RunConfig, spec: ModelSpec, gpu: GpuInfo, backend: str, batch: int) -> str:
    """Why FP8 is not the pick for `cfg` at `batch` (its largest fitting batch), or "" when it is."""
    if batch == 0:
        part = estimate(cfg, spec, backend, batch_size=1)
        if part.limiting_phase == "loading":
            predicted, capacity = usage_vs_capacity(gpu, part)
            return f"{part.load_note}, {predicted:.1f} GiB in all, more than this GPU's {capacity:.1f} GiB"
        return "it does not fit"
    helps, evidence = fp8_evidence(spec, cfg.max_seq_length, batch)
    return "" if helps else f"{evidence}, not enough to repay its compilation"


def _reason(cfg: RunConfig, spec: ModelSpec, gpu: GpuInfo, processes: int = 1) -> str:
    size = f"{spec.total_params / 1e9:.1f}B-parameter model"
    why = {
        "4bit": f"4-bit loading shrinks the {size}'s frozen weights to about a quarter, which is what lets it "
                f"fit in {gpu.usable_gib:.0f} GiB.",
        "16bit": f"The {size} fits in 16-bit, which trains faster than 4-bit and avoids quantization error.",
        "fp8": f"This GPU has FP8 tensor cores: {fp8_evidence(spec, cfg.max_seq_length, cfg.batch_size)[1]} "
               f"(after a few minutes of one-off kernel compilation), with half the weight memory.",
    }[cfg.quantization]
    gpus = f" on each of {processes} GPUs" if processes > 1 else ""
    return (f"{why} Batch {cfg.batch_size} × {cfg.grad_accum} accumulation steps{gpus} gives an effective batch "
            f"of {cfg.global_batch(processes)} within the memory, with {cfg.max_seq_length}-token sequences.")
