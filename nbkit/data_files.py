"""Reading a user's data: the embedded set, a local JSONL/JSON/CSV/Parquet file, rows in memory, or a Hub id.

Errors name the file and the line, and say what to write instead.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import DEFAULT_DATASET
from .errors import DataError
from .resources import DEFAULT_DATA_PATH

_LOCAL_KINDS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_rows(source: Any = DEFAULT_DATASET, split: str = "train"):
    """A datasets.Dataset from the embedded set, a local JSONL/JSON/CSV/Parquet file, rows, or a Hub id."""
    import datasets

    if isinstance(source, datasets.Dataset):
        return source
    if isinstance(source, list):
        if not source:
            raise DataError("The data set is empty: give at least one row.")
        return datasets.Dataset.from_list(source)
    if source == DEFAULT_DATASET:
        source = str(DEFAULT_DATA_PATH)
    path = Path(str(source))
    if path.suffix in _LOCAL_KINDS or path.exists():
        if not path.is_file():
            raise DataError(f"Data file {path} does not exist. Give a JSONL, JSON, CSV or Parquet file, or a Hub id.")
        kind = _LOCAL_KINDS.get(path.suffix)
        if kind is None:
            raise DataError(f"Cannot read {path}: use a .jsonl, .json, .csv or .parquet file.")
        if kind == "json":  # read here, so a broken line is named by its number
            rows = read_json_rows(path)
            _check_layout(rows, path)  # the same rule and message as data.check, before pyarrow's own
            return _from_rows(rows, path)
        try:
            dataset = datasets.load_dataset(kind, data_files=str(path), split="train")
        except Exception as exc:  # pyarrow/pandas parse errors: one line that names the file
            raise DataError(f"Cannot read {path} as {path.suffix[1:].upper()}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        if len(dataset) == 0:
            raise DataError(f"{path} has no rows. Add rows (one example each), or use the embedded "
                            f"{DEFAULT_DATASET!r} to try things out.")
        return dataset
    try:
        return datasets.load_dataset(str(source), split=split)
    except Exception as exc:  # the Hub's errors vary by version; the advice does not
        raise DataError(
            f"Could not load data set {source!r}: {exc}. Use a local .jsonl/.csv file, nbkit's embedded "
            f"{DEFAULT_DATASET!r}, or a Hub id you can reach."
        ) from exc


def read_json_rows(path: Path) -> list[dict]:
    """Rows of a JSONL file (one object a line) or a JSON file (a list of objects), with the line of the first
    broken one named."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".json" and text.lstrip()[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. Fix "
                            "that spot (a missing comma or quote is usual).") from None
        rows = data.get("data", data.get("rows")) if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DataError(f"{path} must hold a list of objects (one per example), e.g. "
                            '[{"instruction": "...", "output": "..."}].')
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} line {number} is not valid JSON ({exc.msg}, column {exc.colno}): fix or "
                                f"delete that line. It starts: {line[:60]!r}") from None
            if not isinstance(row, dict):
                raise DataError(f"{path} line {number} is {type(row).__name__}, not an object: each line must be "
                                'one example such as {"instruction": "...", "output": "..."}.')
            rows.append(row)
    if not rows:
        raise DataError(f"{path} has no rows. Add examples (one JSON object a line), or use the embedded "
                        f"{DEFAULT_DATASET!r} to try things out.")
    return rows


def _from_rows(rows: list[dict], path: Path):
    import datasets

    try:
        return datasets.Dataset.from_list(rows)
    except Exception as exc:  # pyarrow: one column holds text in some rows and lists in others
        raise DataError(f"{path}: the rows do not share one layout ({str(exc).splitlines()[0][:200]}). Make each "
                        "field hold the same kind of value in every row.") from None


def _check_layout(rows: list[dict], path: Path) -> None:
    """What datasets would refuse when it builds its table: one field holding text in some rows and lists (or
    objects, or numbers) in others."""
    def kind(value) -> str | None:
        if value is None:
            return None
        return {str: "text", list: "a list", dict: "an object", bool: "true/false"}.get(type(value), "a number")

    seen: dict[str, tuple[str, int]] = {}
    for number, row in enumerate(rows, start=1):
        for key, value in row.items():
            k = kind(value)
            if k is None:
                continue
            first = seen.setdefault(key, (k, number))
            if first[0] != k:
                raise DataError(f"{path}: the rows do not share one layout: {key!r} is {first[0]} in row "
                                f"{first[1]} and {k} in row {number}. Make each field hold the same kind of value "
                                "in every row.")
