"""Load an instruction data set, render it through the tokenizer's chat template, label completions only.

Labels are computed here rather than left to the trainer so that the exact same masking runs under
Unsloth and under plain transformers: prompt tokens get -100, assistant tokens keep their ids.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..planning.config import DEFAULT_DATASET, RunConfig
from ..errors import DataError
from .data_files import (_LOCAL_KINDS, _check_layout, check_file, load_rows, load_rows_with_notes,  # noqa: F401
                         read_csv_rows, read_json_rows)
from .data_rows import (FORMATS, SHAREGPT_ROLES, check_rows, describe, detect_format, missing_answer,  # noqa: F401
                        row_format, to_messages)
from ..resources import DEFAULT_DATA_PATH

IGNORE = -100


@dataclass
class PreparedData:
    train: Any
    eval: Any | None
    format: str
    rows_in: int
    truncated: int = 0
    dropped: int = 0
    notes: list[str] = field(default_factory=list)
    duplicated: int = 0  # rows identical to an earlier one (kept: each trains as often as it is written)

    def summary(self, packing: Any = None) -> str:
        """What happened to the rows: kept for training, split off for eval, truncated, dropped, duplicated; with
        `packing` (the PackingPlan a trainer made of them: TrainResult.packing), how they were packed."""
        n_eval = len(self.eval) if self.eval is not None else 0
        text = (f"{len(self.train)} training rows ({self.format} format), {n_eval} eval rows; "
                f"{self.truncated} truncated to max_seq_length, {self.dropped} dropped, {self.duplicated} "
                f"duplicated, of {self.rows_in} rows read.")
        return " ".join([text, *self.notes] + ([packing.describe()] if packing is not None else []))


def _render(tokenizer, messages, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of every assistant turn (with its end token)."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("The tokenizer has no chat template. Set tokenizer.chat_template (e.g. a ChatML "
                        "template) or use an instruct model's tokenizer.")
    full = _render(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        start_text = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        end_text = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if full.startswith(start_text) and full.startswith(end_text) and len(end_text) > len(start_text):
            spans.append((len(start_text), len(end_text)))
        else:
            # Templates that rewrite earlier turns (e.g. strip reasoning) are not prefix-stable:
            # fall back to locating the answer text itself.
            cursor = spans[-1][1] if spans else 0
            pos = full.find(msg["content"], cursor)
            if pos < 0:
                raise DataError("Could not find an assistant answer inside the rendered chat template; "
                                "check that the template prints message['content'] unchanged.")
            end = pos + len(msg["content"])
            eos = tokenizer.eos_token or ""
            if eos and full.startswith(eos, end):
                end += len(eos)
            spans.append((pos, end))
    if not spans:
        raise DataError("A conversation has no assistant turn, so there is nothing to learn from it.")
    return full, spans


def tokenize_example(tokenizer, messages, max_length: int) -> dict[str, Any]:
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [tid if any(s <= start < e for s, e in spans) else IGNORE
              for tid, (start, _end) in zip(ids, offsets)]
    truncated = len(ids) > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "truncated": truncated}


def prepare(config: RunConfig, tokenizer, rows: Any = None) -> PreparedData:
    """Tokenized train (and eval) sets with completion-only labels, ready for the trainer (the libraries' own
    progress bars off while it works: the summary says what happened)."""
    from . import backend

    backend.ensure()
    with backend.library_bars_off():
        return _prepare(config, tokenizer, rows)


def _prepare(config: RunConfig, tokenizer, rows: Any = None) -> PreparedData:
    dataset, read_notes = load_rows_with_notes(rows if rows is not None else config.dataset, limit=config.max_samples)
    if len(dataset) == 0:
        raise DataError("The data set is empty.")
    requested = config.dataset_format
    detect_format(dataset.column_names, requested)  # a table in no known format: one line naming its columns
    if config.max_samples:
        dataset = dataset.select(range(min(config.max_samples, len(dataset))))
    rows_in = len(dataset)
    fmt = describe(check_rows(dataset, requested, config.dataset if rows is None else "the rows"))
    # never train on a rendered "None": rows without an answer are dropped and counted
    complete = dataset.filter(lambda row: not missing_answer(row, row_format(row, requested)))
    no_answer = rows_in - len(complete)
    if len(complete) == 0:
        raise DataError(f"None of the {rows_in} rows has both a prompt and an answer ({fmt} format): every answer "
                        "is missing, null or empty. Fill them in, or check dataset_format.")
    dataset = complete
    tokenized = dataset.map(
        lambda row: tokenize_example(tokenizer, to_messages(row, row_format(row, requested)),
                                     config.max_seq_length),
        remove_columns=dataset.column_names,
        desc="Tokenizing",
    )
    truncated = sum(tokenized["truncated"])
    # A row whose answer lies wholly past max_seq_length would train on nothing.
    kept = tokenized.filter(lambda row: any(t != IGNORE for t in row["labels"]))
    dropped = len(tokenized) - len(kept)
    kept = kept.remove_columns("truncated")
    if len(kept) == 0:
        raise DataError(f"Every row lost its answer when cut to max_seq_length={config.max_seq_length}; "
                        "raise max_seq_length.")
    notes = list(read_notes)
    if no_answer:
        notes.append(f"Dropped {no_answer} row(s) with no answer (missing, null or empty).")
    if dropped:
        notes.append(f"Dropped {dropped} row(s) whose answer lies beyond max_seq_length={config.max_seq_length}.")
    duplicated = rows_in - no_answer - len({json.dumps(r, sort_keys=True, default=str) for r in dataset})
    if duplicated:
        notes.append(f"{duplicated} row(s) repeat an earlier row exactly: kept, so each trains as often as it is "
                     "written.")
    kept, eval_set, note = _split_eval(kept, config)
    notes += [note] if note else []
    data = PreparedData(kept, eval_set, fmt, rows_in, truncated, dropped + no_answer, notes, duplicated)
    if truncated or dropped or no_answer or notes:
        print("nbkit:", data.summary())
    return data


MIN_EVAL_SPLIT = 10  # rows below which no eval set is split off


def _split_eval(kept, config: RunConfig):
    """(train, eval or None, what to say): eval_fraction of the rows, when there are enough to split."""
    if config.eval_fraction <= 0:
        return kept, None, ""
    if len(kept) < MIN_EVAL_SPLIT:
        return kept, None, (f"No eval set: eval_fraction={config.eval_fraction:g} of {len(kept)} rows is too few to "
                            f"split (at least {MIN_EVAL_SPLIT} rows are needed).")
    split = kept.train_test_split(test_size=config.eval_fraction, seed=config.seed)
    return split["train"], split["test"], ""


def check(config: RunConfig) -> str:
    """Everything about the data that can be known without the model, in seconds: the file reads (only as far as
    max_samples), its rows parse, a format matches, answers are text, and some rows have them; a Hub data set can
    be reached. Returns a one-line summary; raises DataError."""
    source = config.dataset
    path = Path(str(DEFAULT_DATA_PATH if source == DEFAULT_DATASET else source)).expanduser()
    if not (path.suffix in _LOCAL_KINDS or path.exists()):
        from .hub import check_dataset

        return f"data: {source!r} (Hub data set, from {check_dataset(str(source))})"
    check_file(path)
    kind = _LOCAL_KINDS.get(path.suffix)
    if kind in ("json", "csv"):
        # plain Python, no `datasets`: the form checks the data while the engine may still be importing on
        # another thread, and datasets reaches into a half-imported transformers
        rows = (read_json_rows if kind == "json" else read_csv_rows)(path, config.max_samples)
        columns = list(dict.fromkeys(k for row in rows for k in row))
    else:
        from . import backend

        backend.ensure()  # Parquet goes through datasets: after the engine's import
        rows = load_rows(str(path))
        columns = rows.column_names
    requested = config.dataset_format
    detect_format(columns, requested)
    said = getattr(rows, "notes", [])
    if not isinstance(rows, list):  # a Parquet table; a file's Rows were read only as far as max_samples
        rows = [rows[i] for i in range(min(len(rows), config.max_samples or len(rows)))]
    fmt = describe(check_rows(rows, requested, path))
    _check_layout(rows, path)
    empty = sum(missing_answer(row, row_format(row, requested)) for row in rows)
    if empty == len(rows):
        raise DataError(f"None of the {len(rows)} rows has both a prompt and an answer ({fmt} format, {path}): "
                        "every answer is missing, null or empty. Fill them in, or check dataset_format.")
    skipped = f", {empty} without an answer (will be skipped)" if empty else ""
    return f"data: {len(rows)} rows, {fmt} format{skipped}" + "".join(f". {n}" for n in said)


def preview(config: RunConfig, tokenizer, n: int = 3) -> list[list[tuple[str, bool]]]:
    """The first `n` rows as the model will see them: each a list of (token text, trained on?) in order, the chat
    template rendered, prompt tokens masked (False) and answer tokens trained (True)."""
    dataset = load_rows(config.dataset)
    detect_format(dataset.column_names, config.dataset_format)
    rows = []
    for row in dataset:
        fmt = row_format(row, config.dataset_format)
        if missing_answer(row, fmt):
            continue
        ex = tokenize_example(tokenizer, to_messages(row, fmt), config.max_seq_length)
        rows.append([(tokenizer.decode([tid]), label != IGNORE) for tid, label in zip(ex["input_ids"], ex["labels"])])
        if len(rows) == n:
            break
    return rows
