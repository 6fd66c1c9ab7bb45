"""Packing: several short rows in one sequence of up to max_seq_length tokens, so each step is as full as planned.

TRL packs them (best-fit decreasing; a row is never split or cut: `packing_strategy="bfd"`), and its padding-free
collator numbers each row's positions from 0. From those positions the attention keeps rows apart (Unsloth's
variable-length kernels; transformers' packed-sequence mask on CPU), and the first label of every row is masked, so
no row predicts its neighbour's first token. nbkit's answer-only labels travel unchanged. The memory plan already
counts batch × max_seq_length tokens a step (nbkit.planning.memory.estimate): the most a packed step can hold.

A packed step holds more rows, so an epoch has fewer optimizer steps: EpochPlan says how many, so that a packed run
does not look smaller than it is.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..planning.config import RunConfig
from ..errors import ConfigError

# "auto" packs when a packed sequence holds at least this many rows on average: below it, the steps would be little
# fuller, and packing still changes what a step is
MIN_ROWS_PER_SEQUENCE = 1.5


@dataclass(frozen=True)
class PackingPlan:
    """Whether a run packs, why, and what an epoch then holds."""
    on: bool
    reason: str
    rows: int  # training rows in an epoch
    sequences: int  # what the trainer batches: packed sequences, or the rows themselves
    tokens: int  # real (non-padding) tokens in an epoch
    max_length: int

    @property
    def rows_per_sequence(self) -> float:
        return self.rows / max(1, self.sequences)

    def describe(self) -> str:
        if not self.on:
            return f"Packing off: {self.reason}."
        fill = self.tokens / max(1, self.sequences * self.max_length)
        return (f"Packing on ({self.reason}): {self.rows} rows in {self.sequences} sequences of up to {self.max_length} "
                f"tokens ({self.rows_per_sequence:.1f} rows each, {fill:.0%} full); each row attends only to itself "
                "and keeps its own labels.")


def sequences_when_packed(lengths: list[int], max_length: int) -> int:
    """How many sequences best-fit-decreasing packing makes of rows of these lengths: TRL's algorithm (each row goes
    where it leaves the least room), counted in plain Python in milliseconds to decide. TRL packs 1,000 rows at a time,
    so it can make a few more (5,762 for 5,750 of 20,000 rows): `packed_by` takes its count once it has packed."""
    import bisect

    rooms: list[int] = []  # the room left in each open sequence, sorted
    sequences = 0
    for n in sorted((min(n, max_length) for n in lengths if n > 0), reverse=True):
        i = bisect.bisect_left(rooms, n)
        if i < len(rooms):
            room = rooms.pop(i)
        else:
            room, sequences = max_length, sequences + 1
        if room > n:
            bisect.insort(rooms, room - n)
    return sequences


def row_lengths(dataset) -> list[int]:
    """Tokens in each row, from the Arrow column where there is one (no row is copied into Python)."""
    if dataset is None:
        return []
    if hasattr(dataset, "with_format") and hasattr(dataset, "select_columns"):
        import pyarrow.compute as pc

        # through the dataset's own view: a split keeps the whole table beneath and selects rows by index
        column = dataset.select_columns(["input_ids"]).with_format("arrow")[:]["input_ids"]
        return pc.list_value_length(column).to_pylist()
    return [len(ids) for ids in dataset["input_ids"]]


def decide(config: RunConfig, lengths: list[int], *, on_cuda: bool, model_type: str = "",
           sharded: bool = False) -> PackingPlan:
    """The plan for `config.packing` ("auto", "on", "off") on rows of `lengths` tokens; "on" where packing cannot
    keep its promises is a ConfigError that says why."""
    mode, max_length = config.packing, config.max_seq_length
    rows, tokens = len(lengths), sum(lengths)

    def plan(on: bool, reason: str, sequences: int | None = None) -> PackingPlan:
        return PackingPlan(on, reason, rows, sequences if on and sequences else rows, tokens, max_length)

    if mode == "off":
        return plan(False, "packing='off'")
    refusal = _cannot_pack(model_type, sharded)
    if refusal:
        if mode == "on":
            raise ConfigError(f"packing='on': {refusal}. Use packing='off' (or 'auto').")
        return plan(False, refusal)
    sequences = sequences_when_packed(lengths, max_length)
    if mode == "on":
        return plan(True, "packing='on'", sequences)
    if not on_cuda:
        return plan(False, "on a CPU a step costs in proportion to its tokens, so fuller steps gain nothing")
    if model_type in MOE_TYPES:
        return plan(False, MOE_UNPACKED)
    gain = rows / max(1, sequences)
    if gain < MIN_ROWS_PER_SEQUENCE:
        return plan(False, f"the rows nearly fill max_seq_length={max_length} already ({gain:.1f} rows a sequence "
                           "if packed)")
    return plan(True, f"auto: {gain:.1f} rows fit in a sequence of {max_length} tokens", sequences)


# Mixture-of-experts models train unpacked unless asked: packed, Qwen3-MoE held far more than unpacked at the same
# tokens a step (issue #37: 18.80 vs 8.68 GiB allocated, 4-bit, 12 of 48 layers, on a rehearsed RTX 4090; and
# bench/results/moe_device.json: 23.0 GiB packed where moe_fit.json's unpacked rows of the same 8 x 2048 tokens held
# 15.4, 16-bit, 8 layers), which the memory plan does not cover; Unsloth itself ignores packing for gpt-oss.
MOE_TYPES = {"qwen3_moe", "qwen2_moe", "mixtral", "gpt_oss", "glm4_moe", "olmoe"}
MOE_UNPACKED = ("auto: mixture-of-experts models held far more memory packed than unpacked on the device (Qwen3-MoE: "
                "23.0 vs 15.4 GiB at the same tokens a step), more than the plan allows; packing='on' packs anyway")


def _cannot_pack(model_type: str, sharded: bool) -> str:
    if model_type == "gemma2":
        return ("Gemma 2's softcapped attention trains padded rows in Unsloth (no fused kernel computes it), so packed "
                "rows would see each other")
    if sharded:
        return "sharded (FSDP) runs train unpacked: packing has not been checked there"
    return ""


def for_run(loaded, data) -> PackingPlan:
    """The plan for a loaded model on prepared data."""
    from ..gpus import fsdp

    model_config = getattr(loaded.model, "config", None)
    return decide(loaded.config, row_lengths(data.train), on_cuda=loaded.on_cuda,
                  model_type=str(getattr(model_config, "model_type", "")), sharded=fsdp.sharded(loaded.config))


def packed_by(trainer, plan: PackingPlan) -> PackingPlan:
    """The plan with the number of sequences the trainer actually made."""
    from dataclasses import replace

    return replace(plan, sequences=len(trainer.train_dataset)) if plan.on else plan


class _CheckedWarnings:
    """TRL warns that packed rows may see each other unless FlashAttention runs. nbkit packs only where the attention
    keeps rows apart (Unsloth's kernels; transformers' packed-sequence mask, tests/test_packing.py), so the warning
    would only alarm: it is dropped, and nothing else TRL says."""
    NEEDLES = ("Padding-free training is enabled, but the attention implementation",
               "You are using packing, but the attention implementation")

    def filter(self, record) -> bool:
        return not any(needle in str(record.getMessage()) for needle in self.NEEDLES)


def quiet_checked_warnings() -> None:
    import logging

    logger = logging.getLogger("trl.trainer.sft_trainer")
    if not any(isinstance(f, _CheckedWarnings) for f in logger.filters):
        logger.addFilter(_CheckedWarnings())
