"""One row of instruction data, read as written: its format is recognised per row (a file may mix alpaca,
prompt/completion, messages and ShareGPT rows), a chat turn is read under either spelling (role/content or
from/value), and speakers are named as the tools that write ShareGPT name them.

A row is dropped as answerless only when it truly has no answer; a speaker nbkit cannot place, a row in no known
format, or a field that is not text is refused with its line, never skipped.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any, Iterable

from ..errors import DataError

FORMATS = {
    "alpaca": ("instruction", "output"),
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "prompt_completion": ("prompt", "completion"),
}
# Speakers as the tools that read ShareGPT name them: Unsloth's standardize_sharegpt (system; user, human, input;
# gpt, assistant, output), FastChat's ShareGPT dumps (chatgpt, bing and bard answer; the same mapping most
# cleaning scripts use), Gemma's "model", OpenAssistant's "prompter". Matched without case or surrounding spaces.
SHAREGPT_ROLES = {"system": "system", "user": "user", "human": "user", "input": "user", "prompter": "user",
                  "assistant": "assistant", "gpt": "assistant", "output": "assistant", "model": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}
# roles a chat template may know besides those three: passed on as written, the template decides
PASSED_ROLES = ("tool", "developer", "function", "ipython")
CHAT_COLUMNS = {"messages": "messages", "sharegpt": "conversations"}


def _blank(value) -> bool:
    return value is None or not str(value).strip()


def detect_format(columns: Iterable[str], requested: str = "auto") -> str:
    """The format of a table with these columns (the first that fits, for a table that holds several); with
    `requested`, that format after checking its columns exist."""
    columns = list(columns)
    known = "; ".join(f"{name}: {', '.join(cols)}" for name, cols in FORMATS.items())
    if requested != "auto":
        if requested not in FORMATS:
            raise DataError(f"Unknown dataset_format {requested!r}; choose auto or one of: {known}.")
        missing = [c for c in FORMATS[requested] if c not in columns]
        if missing:
            raise DataError(
                f"dataset_format={requested!r} needs column(s) {missing}, but the data set has {columns}. "
                "Rename with dataset.rename_column(old, new) or pick the matching format."
            )
        return requested
    for name, needed in FORMATS.items():
        if all(c in columns for c in needed):
            return name
    raise DataError(
        f"The data set's columns {columns} match no format nbkit knows ({known}). "
        "Rename your columns with dataset.rename_column(old, new), e.g. question -> instruction and "
        "answer -> output."
    )


def row_format(row: dict[str, Any], requested: str = "auto") -> str | None:
    """The format this row is written in: the first whose fields it fills (a table that mixes formats holds
    every format's columns, empty where a row does not use them); None when it fills none."""
    if requested != "auto":
        return requested
    return next((name for name, cols in FORMATS.items() if any(row.get(c) is not None for c in cols)), None)


def speaker(turn: dict[str, Any]) -> str | None:
    """A chat turn's role in chat-template terms (user, assistant, system, or a passed role); None if unknown."""
    raw = turn.get("role") if turn.get("role") is not None else turn.get("from")
    name = str(raw).strip().lower() if raw is not None else ""
    return SHAREGPT_ROLES.get(name) or (name if name in PASSED_ROLES else None)


def turn_text(turn: dict[str, Any], fmt: str) -> tuple[str, Any]:
    """(the key the turn's text is under, the text): content or value, whichever the turn fills."""
    for key in ("content", "value") if fmt == "messages" else ("value", "content"):
        if turn.get(key) is not None:
            return key, turn[key]
    return ("content" if fmt == "messages" else "value"), None


def missing_answer(row: dict[str, Any], fmt: str | None) -> bool:
    """True when a row has nothing to train on: no prompt, or no answer (missing, null or blank)."""
    if fmt == "alpaca":
        return _blank(row.get("instruction")) or _blank(row.get("output"))
    if fmt == "prompt_completion":
        return _blank(row.get("prompt")) or _blank(row.get("completion"))
    if fmt not in CHAT_COLUMNS:
        return True
    turns = row.get(CHAT_COLUMNS[fmt])
    if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
        return True
    # blank turns elsewhere (an empty system prompt) are rendered as written; the row needs one real answer
    return not any(speaker(t) == "assistant" and not _blank(turn_text(t, fmt)[1]) for t in turns)


def to_messages(row: dict[str, Any], fmt: str) -> list[dict[str, str]]:
    if fmt == "alpaca":
        prompt = str(row["instruction"]).strip()
        extra = row.get("input") or ""
        if str(extra).strip():
            prompt = f"{prompt}\n\n{str(extra).strip()}"
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": str(row["output"])}]
    if fmt == "prompt_completion":
        return [{"role": "user", "content": str(row["prompt"])},
                {"role": "assistant", "content": str(row["completion"])}]
    if fmt in CHAT_COLUMNS:
        out = []
        for j, turn in enumerate(row[CHAT_COLUMNS[fmt]]):
            role = speaker(turn)
            if role is None:
                raise DataError(unknown_speaker_message(turn, f"{CHAT_COLUMNS[fmt]}[{j}]"))
            text = turn_text(turn, fmt)[1]
            out.append({"role": role, "content": "" if text is None else str(text)})  # never a rendered "None"
        return out
    raise DataError(f"Unknown format {fmt!r}.")


def unknown_speaker_message(turn: dict[str, Any], where: str) -> str:
    key = "role" if turn.get("role") is not None else "from"
    said = turn.get(key)
    what = f"unknown {key!r} value {said!r}" if said is not None else "no speaker ('from' or 'role')"
    return (f"{where} has {what}: nbkit reads user (human, input, prompter), assistant (gpt, chatgpt, bing, bard, "
            f"model, output), system, and {', '.join(PASSED_ROLES)}. Rename that speaker to the role it plays.")


def check_rows(rows, requested: str, where) -> Counter:
    """Everything about each row that can be known without the model: it is in a format nbkit reads, every
    speaker is known, every trained field is text. Returns how many rows each format holds; raises DataError
    naming the line (or row)."""
    lines = getattr(rows, "lines", None)
    formats: Counter = Counter()
    for i, row in enumerate(rows):
        at = f"line {lines[i]}" if lines and lines[i] else f"row {i + 1}"
        fmt = row_format(row, requested)
        if fmt is None and all(_blank(v) for v in row.values()):
            continue  # an empty row: answerless, dropped and counted
        if fmt is None:
            filled = [k for k, v in row.items() if v is not None]
            raise DataError(f"{where} {at} is in no format nbkit knows (it fills {filled}): write it like the other "
                            "rows, e.g. instruction and output, or delete it.")
        formats[fmt] += 1
        _check_text(row, fmt, f"{where} {at}")
        turns = row.get(CHAT_COLUMNS[fmt]) if fmt in CHAT_COLUMNS else None
        for j, turn in enumerate(turns if isinstance(turns, list) else []):
            if isinstance(turn, dict) and speaker(turn) is None:
                raise DataError(f"{where} {at}: " + unknown_speaker_message(turn, f"{CHAT_COLUMNS[fmt]}[{j}]"))
    return formats


def _check_text(row: dict[str, Any], fmt: str, where: str) -> None:
    fields = {"alpaca": ("instruction", "input", "output"), "prompt_completion": ("prompt", "completion")}
    values = [(f, row.get(f)) for f in fields.get(fmt, ())]
    if fmt in CHAT_COLUMNS:
        column = CHAT_COLUMNS[fmt]
        turns = row.get(column)
        for j, turn in enumerate(turns if isinstance(turns, list) else []):
            if isinstance(turn, dict):
                key, value = turn_text(turn, fmt)
                values.append((f"{column}[{j}].{key}", value))
    for name, value in values:
        if isinstance(value, (list, dict)):
            raise DataError(f"{where}: {name!r} is {'a list' if isinstance(value, list) else 'an object'} "
                            f"({json.dumps(value)[:60]}), not text. Write it as the text the model should learn "
                            'to say, e.g. "red, green".')


def describe(formats: Counter) -> str:
    """'alpaca' for one format; 'mixed: 3 alpaca, 2 sharegpt' for several; 'no known' for none (empty rows)."""
    if not formats:
        return "no known"
    if len(formats) == 1:
        return next(iter(formats))
    return "mixed: " + ", ".join(f"{n} {fmt}" for fmt, n in sorted(formats.items(), key=lambda c: (-c[1], c[0])))
