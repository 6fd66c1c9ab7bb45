"""Settings that fit: recommend() picks quantization, rank, length, batch and, with several GPUs, whether to copy
the model to each (DDP) or shard it across them (FSDP); check_fits() stops a run that cannot fit, with the fix.

Everything is decided from nbkit.planning.memory's predictions, before anything is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass

from .config import RunConfig
from ..errors import HardwareError
from .fp8 import fp8_evidence
from .hardware import GpuInfo
from .memory import SAFETY_MARGIN, Breakdown, card_bf16, estimate, fits, largest_batch, usage_vs_capacity
from .memory_moe import plan_caveat
from ..specs import ModelSpec

# what sharded runs train with: transformers + peft (Unsloth does not shard a model)
SHARDED_BACKEND = "transformers"


@dataclass(frozen=True)
class Recommendation:
    config: RunConfig
    breakdown: Breakdown
    fits: bool
    reason: str

    def summary(self) -> str:
        c = self.config
        text = (f"quantization={c.quantization!r}, lora_r={c.lora_r}, max_seq_length={c.max_seq_length}, "
                f"batch_size={c.batch_size}, grad_accum={c.grad_accum}")
        return text + (f", parallelism={c.parallelism!r}" if c.parallelism != "auto" else "")


def check_fits(config: RunConfig, spec: ModelSpec, gpu: GpuInfo, backend: str = "unsloth",
               processes: int = 1) -> Breakdown:
    """Raise a HardwareError with a concrete fix when the run is predicted not to fit this GPU (each GPU, in a
    multi-GPU run)."""
    part = estimate(config, spec, backend, processes=processes, bf16=card_bf16(gpu))
    if fits(part, gpu, margin=1.0):
        return part
    predicted, capacity = usage_vs_capacity(gpu, part)
    rec = recommend(spec, gpu, base=config, backend=backend, processes=processes)
    advice = (f"Try: {rec.summary()}" if rec.fits else
              "Even 4-bit with batch 1 and 512 tokens does not fit: pick a smaller model"
              + (" or shard it across more GPUs." if processes > 1 else " (or shard it across several GPUs)."))
    where = f"each of {processes} GPUs" if processes > 1 else "this GPU"
    held = f" free now ({'; '.join(gpu.held_by)} in use)" if gpu.held_by else ""
    raise HardwareError(
        f"{spec.name or 'This model'} with {config.quantization}, batch {config.batch_size} and "
        f"{config.max_seq_length} tokens needs about {predicted:.1f} GiB, but {where} has {capacity:.1f} GiB"
        f"{held} (tier {gpu.tier}). {advice} Pass check_memory=False to try anyway."
    )


def choose_parallelism(config: RunConfig, spec: ModelSpec, gpu: GpuInfo, processes: int,
                       engine: str = "unsloth") -> tuple[RunConfig, str]:
    """`config` with parallelism decided for a run over `processes` GPUs, and why: "ddp" when the run fits one GPU
    (a whole copy on each, the fastest), "fsdp" when it fits only sharded. A config that names one keeps it."""
    if processes <= 1 or config.parallelism != "auto":
        return config, ""
    if not gpu.available:  # CPU processes have no memory limit to plan for
        return config.replace(parallelism="ddp"), "data parallel (no GPU memory to plan for)"
    one = usage_vs_capacity(gpu, estimate(config.replace(parallelism="ddp"), spec, engine, bf16=card_bf16(gpu)))
    if one[0] <= one[1]:
        return config.replace(parallelism="ddp"), (
            f"the run fits one GPU ({one[0]:.1f} of {one[1]:.1f} GiB): data parallel (DDP), a whole copy on each "
            f"of the {processes} GPUs")
    cfg = config.replace(parallelism="fsdp")
    each = usage_vs_capacity(gpu, estimate(cfg, spec, SHARDED_BACKEND, processes=processes, bf16=card_bf16(gpu)))
    return cfg, (f"the run needs about {one[0]:.1f} GiB on one GPU, which has {one[1]:.1f}: sharded (FSDP) across "
                 f"{processes} GPUs, about {each[0]:.1f} GiB each")


def fill_in(config: RunConfig, gpu: GpuInfo, keep=(), backend: str = "unsloth", processes: int = 1,
            spec: ModelSpec | None = None) -> Recommendation:
    """recommend() for a config whose `keep` fields the user set: only the others are chosen. When the kept
    values cannot fit, a HardwareError says so and what would fit instead; nothing is silently replaced."""
    from ..specs import spec_for

    rec = recommend(spec or spec_for(config.model), gpu, base=config, backend=backend, processes=processes,
                    keep=keep)
    if not rec.fits:
        raise HardwareError(rec.reason)
    return rec


def recommend(spec: ModelSpec, gpu: GpuInfo, base: RunConfig | None = None, backend: str = "unsloth",
              target_effective_batch: int = 8, quantizations=None, processes: int = 1,
              keep=()) -> Recommendation:
    """Settings that fit `gpu` with a safety margin, with a short reason a workshop attendee can follow.

    `quantizations` limits the choice (e.g. to the one the user asked for); by default nbkit chooses. With
    `processes` GPUs (each like `gpu`): a model that fits one GPU trains data-parallel (DDP, every GPU a whole
    copy: the fastest), one that fits only across them is sharded (FSDP); `base.parallelism` forces either. The
    accumulation shrinks so that the global batch (batch x accumulation x processes) stays near
    `target_effective_batch`. `keep` names fields of `base` the user set (quantization, max_seq_length, lora_r,
    batch_size, grad_accum, gradient_checkpointing): they are kept as they are, and if they cannot fit, the
    Recommendation does not fit and its reason says what would.
    """
    base = base or RunConfig(model=spec.name or RunConfig().model)
    unknown = set(keep) - set(KEEPABLE)
    if unknown:
        raise ValueError(f"recommend(keep=...) takes {KEEPABLE}, not {sorted(unknown)}")
    if keep:
        if "quantization" in keep:
            quantizations = [base.quantization]
        rec = _recommend(spec, gpu, base, backend, target_effective_batch, quantizations, processes, tuple(keep))
        if rec.fits:
            return rec
        free = _recommend(spec, gpu, base, backend, target_effective_batch, None, processes, ())
        kept = ", ".join(f"{k}={getattr(base, k)!r}" for k in KEEPABLE if k in keep)
        why = (f"{gpu.name} has no FP8 tensor cores (compute capability {gpu.capability[0]}."
               f"{gpu.capability[1]}; FP8 needs 8.9+)" if base.quantization == "fp8" and "quantization" in keep
               and not gpu.fp8 else rec.reason)
        other = f"What would fit: {free.summary()}." if free.fits else free.reason
        return Recommendation(rec.config, rec.breakdown, False, f"The settings you chose ({kept}) cannot run "
                              f"here: {why} {other} Change those settings, or leave them to nbkit.")
    return _recommend(spec, gpu, base, backend, target_effective_batch, quantizations, processes, ())


# what recommend(keep=...) can leave as the user set it
KEEPABLE = ("quantization", "max_seq_length", "lora_r", "batch_size", "grad_accum", "gradient_checkpointing")


def set_by_user(config: RunConfig) -> list[str]:
    """The choosable fields of `config` that differ from RunConfig's defaults: a value someone wrote on purpose,
    for recommend(keep=...) to keep."""
    default = RunConfig(model=config.model, output_dir=config.output_dir)
    return [name for name in KEEPABLE if getattr(config, name) != getattr(default, name)]


def _recommend(spec, gpu, base, backend, target_effective_batch, quantizations, processes, keep):
    if processes <= 1 or base.parallelism != "fsdp":
        one = _one_gpu(spec, gpu, base, backend, target_effective_batch, quantizations, processes, keep)
        if one or processes <= 1 or base.parallelism == "ddp":
            return one or _none_fits(spec, gpu, base, backend, target_effective_batch, processes, keep)
    sharded = _sharded(spec, gpu, base, target_effective_batch, quantizations, processes, keep)
    return sharded or _none_fits(spec, gpu, base, SHARDED_BACKEND, target_effective_batch, processes, keep)


def _candidates(base: RunConfig, options, parallelism: str, keep=()):
    """Settings to try, best first: longest sequences, then the quantizations in order, then the larger rank;
    what `keep` names stays as `base` has it."""
    seqs = (base.max_seq_length,) if "max_seq_length" in keep else (2048, 1024, 512)
    ranks = ((base.lora_r, base.lora_alpha),) if "lora_r" in keep else ((16, 16), (8, 8))
    checkpointing = base.gradient_checkpointing if "gradient_checkpointing" in keep else True
    for seq in seqs:
        for quant in options:
            for r, alpha in ranks:
                yield base.replace(quantization=quant, lora_r=r, lora_alpha=alpha, max_seq_length=seq,
                                   gradient_checkpointing=checkpointing, parallelism=parallelism)


def _with_batch(cfg: RunConfig, batch: int, target: int, processes: int, keep=()) -> RunConfig:
    """`batch` rows per GPU, with the accumulation that keeps the global batch near `target` (unless kept)."""
    accum = cfg.grad_accum if "grad_accum" in keep else max(1, target // (batch * processes))
    return cfg.replace(batch_size=batch, grad_accum=accum)


def _batch(cfg, spec, gpu, backend, target, keep, processes=1) -> int:
    """The batch to train with: the user's if kept (0 when it does not fit), else the largest that fits."""
    most = largest_batch(cfg, spec, gpu, backend, processes=processes)
    if "batch_size" in keep:
        return cfg.batch_size if cfg.batch_size <= most else 0
    return min(most, target)


def _one_gpu(spec, gpu, base, backend, target, quantizations, processes, keep=()) -> Recommendation | None:
    """The best settings with the whole model on each GPU, or None."""
    options = ["fp8"] if gpu.fp8 else []
    options += ["16bit", "4bit"] if gpu.usable_gib >= 20 else ["4bit", "16bit"]
    if quantizations:
        options = [q for q in quantizations if q != "fp8" or gpu.fp8]
    mode = "ddp" if processes > 1 else "auto"  # one GPU has nothing to shard across
    passed_over = ""  # why FP8 was not chosen, when the card has it
    for cfg in _candidates(base, options, mode, keep):
        quant = cfg.quantization
        batch = _batch(cfg, spec, gpu, backend, target, keep)
        if quant == "fp8" and not quantizations:
            skip = _fp8_pass_over(cfg, spec, gpu, backend, batch)
            if skip:
                passed_over = passed_over or skip
                continue
        # 16-bit is only worth it with room for a real batch; otherwise 4-bit is the safer pick
        if batch == 0 or (quant != "4bit" and batch < 2 and not quantizations):
            continue
        cfg = _with_batch(cfg, batch, target, processes, keep)
        reason = _reason(cfg, spec, gpu, processes)
        if passed_over and quant != "fp8":
            reason += f" FP8 was passed over: {passed_over}."
        return Recommendation(cfg, estimate(cfg, spec, backend, bf16=card_bf16(gpu)), True, reason)
    return None


# Sharded training in fp16 (cards without bf16: T4, V100) trained a zero loss in nbkit's rehearsal of two T4s
# (bench/results/sharded_32b.json, docs/sharding.md); the same run in bf16 trained. Until that is fixed nbkit
# does not shard in fp16.
NO_BF16 = ("sharding needs a GPU with bf16: in fp16 (what {name} computes in) the sharded rehearsal on two T4s "
           "trained a zero loss and left the adapters unchanged")


def can_shard(gpu: GpuInfo) -> bool:
    """Whether nbkit shards on this GPU: on CPU (tests) yes; on a GPU only with bf16 (NO_BF16 says why)."""
    return not gpu.available or gpu.bf16


def _sharded(spec, gpu, base, target, quantizations, processes, keep=()) -> Recommendation | None:
    """The best settings with the model sharded across `processes` GPUs, or None."""
    if not can_shard(gpu):
        return None
    options = [q for q in (quantizations or ("4bit", "16bit")) if q != "fp8"]
    for cfg in _candidates(base, options, "fsdp", keep):
        batch = _batch(cfg, spec, gpu, SHARDED_BACKEND, target, keep, processes)
        if batch == 0:
            continue
        cfg = _with_batch(cfg, batch, target, processes, keep)
        part = estimate(cfg, spec, SHARDED_BACKEND, processes=processes, bf16=card_bf16(gpu))
        return Recommendation(cfg, part, True, _sharded_reason(cfg, spec, gpu, processes, part))
    return None


def _none_fits(spec, gpu, base, backend, target, processes, keep=()) -> Recommendation:
    smallest = dict(quantization="4bit", lora_r=8, lora_alpha=8, max_seq_length=512, batch_size=1, grad_accum=target)
    cfg = base.replace(**{k: v for k, v in smallest.items() if k not in keep and not (k == "lora_alpha"
                                                                                     and "lora_r" in keep)})
    if processes > 1:
        cfg = cfg.replace(parallelism="fsdp")
        backend = SHARDED_BACKEND
    part = estimate(cfg, spec, backend, processes=processes, bf16=card_bf16(gpu))
    held = f" free now ({'; '.join(gpu.held_by)} in use)" if gpu.held_by else ""
    where = (f"each of {processes} GPUs has {gpu.room_gib:.1f} GiB{held}, even with the model sharded across them"
             if processes > 1 else f"this GPU has {gpu.room_gib:.1f} GiB{held}")
    fix = " or more GPUs." if processes > 1 else " (or shard it across several GPUs)."
    if usage_vs_capacity(gpu, part)[0] <= gpu.room_gib:  # fits the card, not its safety margin
        where += (f", of which nbkit plans to use {SAFETY_MARGIN:.0%} (longer rows than planned and fragmentation "
                  "need the rest; pass check_memory=False to try anyway)")
    if processes > 1 and not can_shard(gpu):
        where = f"each of {processes} GPUs has {gpu.usable_gib:.1f} GiB, and {NO_BF16.format(name=gpu.name)}"
        fix = " that fits one GPU, or GPUs with bf16."
    nearest = "" if processes > 1 else _nearest_card(cfg, spec, backend, gpu)
    if nearest:
        fix = (f" or a GPU with more memory (the smallest card nbkit knows that holds it: the {nearest}), or shard "
               "it across several GPUs.")
    return Recommendation(cfg, part, False,
                          f"{spec.name or 'This model'} needs about {part.peak_total:.1f} GiB even "
                          f"{_smallest_words(cfg)}; {where}. Choose a smaller model{fix}")


def _nearest_card(cfg: RunConfig, spec: ModelSpec, backend: str, gpu: GpuInfo) -> str:
    """The nearest card up (by what torch can use of it) where the same settings fit, planned as that card (its
    bf16 included): "A100 40GB"; "" when none does."""
    from .cards import CARDS, planned_gpu

    for card in sorted(CARDS.values(), key=lambda c: (c.usable_gib, c.name)):
        if card.usable_gib <= gpu.usable_gib:
            continue
        other = planned_gpu(card.name)
        if fits(estimate(cfg, spec, backend, bf16=card_bf16(other)), other):
            return card.name
    return ""


def _smallest_words(cfg: RunConfig) -> str:
    quant = "in 4-bit" if cfg.quantization == "4bit" else f"in {cfg.quantization}"
    return f"{quant} with batch {cfg.batch_size}" + (f" and {cfg.max_seq_length} tokens"
                                                     if cfg.max_seq_length != 512 else "")


def _fp8_pass_over(cfg: RunConfig, spec: ModelSpec, gpu: GpuInfo, backend: str, batch: int) -> str:
    """Why FP8 is not the pick for `cfg` at `batch` (its largest fitting batch), or "" when it is."""
    if batch == 0:
        part = estimate(cfg, spec, backend, batch_size=1, bf16=card_bf16(gpu))
        if part.limiting_phase == "loading":
            predicted, capacity = usage_vs_capacity(gpu, part)
            return f"{part.load_note}, {predicted:.1f} GiB in all, more than this GPU's {capacity:.1f} GiB"
        return "it does not fit"
    helps, evidence = fp8_evidence(spec, cfg.max_seq_length, batch)
    return "" if helps else f"{evidence}, not enough to repay its compilation"


def _reason(cfg: RunConfig, spec: ModelSpec, gpu: GpuInfo, processes: int = 1) -> str:
    size = spec.describe()  # an MoE model's total and active parameters
    why = {
        "4bit": f"4-bit loading shrinks the frozen weights of the {size} to about a quarter, which is what lets it "
                f"fit in {gpu.usable_gib:.0f} GiB.",
        "16bit": f"The {size} fits in 16-bit, which trains faster than 4-bit and avoids quantization error.",
        "fp8": f"This GPU has FP8 tensor cores: {fp8_evidence(spec, cfg.max_seq_length, cfg.batch_size)[1]} "
               f"(after a few minutes of one-off kernel compilation), with half the weight memory.",
    }[cfg.quantization]
    gpus = ""
    if processes > 1:
        gpus = f" on each of {processes} GPUs"
        why += (f" It fits one GPU, so the {processes} GPUs train data-parallel (DDP): each holds a whole copy "
                "and trains its own rows, the fastest way to use them.")
    caveat = plan_caveat(spec)
    return (f"{why} Batch {cfg.batch_size} × {cfg.grad_accum} accumulation steps{gpus} gives an effective batch "
            f"of {cfg.global_batch(processes)} within the memory, with {cfg.max_seq_length}-token sequences."
            + (f" {caveat}" if caveat else ""))


def _sharded_reason(cfg: RunConfig, spec: ModelSpec, gpu: GpuInfo, processes: int, part: Breakdown) -> str:
    whole = estimate(cfg.replace(parallelism="ddp", batch_size=1), spec, SHARDED_BACKEND, bf16=card_bf16(gpu))
    one, capacity = usage_vs_capacity(gpu, whole)
    return (f"The {spec.describe()} does not fit one GPU (about {one:.1f} GiB in "
            f"{cfg.quantization} with batch 1; each GPU has {capacity:.1f} GiB), so it is sharded across the "
            f"{processes} GPUs (FSDP): each holds 1/{processes} of the weights and about "
            f"{usage_vs_capacity(gpu, part)[0]:.1f} GiB in all. Each GPU gathers every layer's weights from the "
            f"others as it computes, which costs speed with short sequences (docs/sharding.md). Batch {cfg.batch_size} "
            f"× {cfg.grad_accum} accumulation steps on each GPU gives an effective batch of "
            f"{cfg.global_batch(processes)}, with {cfg.max_seq_length}-token sequences.")
