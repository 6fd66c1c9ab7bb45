"""Reading a user's data: the embedded set, a local JSONL/JSON/CSV/Parquet file, rows in memory, or a Hub id.

Errors name the file and the line, and say what to write instead.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..planning.config import DEFAULT_DATASET
from ..errors import DataError
from ..resources import DEFAULT_DATA_PATH
from .data_text import decoded_lines, refuse_lone_surrogate

_LOCAL_KINDS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def load_rows(source: Any = DEFAULT_DATASET, split: str = "train", limit: int | None = None):
    """A datasets.Dataset from the embedded set, a local JSONL/JSON/CSV/Parquet file, rows, or a Hub id."""
    return load_rows_with_notes(source, split, limit)[0]


def load_rows_with_notes(source: Any = DEFAULT_DATASET, split: str = "train", limit: int | None = None):
    """(dataset, what was said about reading it). With `limit`, a JSONL or CSV file is read only as far as the
    first `limit` rows: a big file costs what the rows taken cost."""
    import datasets

    if isinstance(source, datasets.Dataset):
        return source, []
    if isinstance(source, list):
        if not source:
            raise DataError("The data set is empty: give at least one row.")
        for i, row in enumerate(source):
            refuse_lone_surrogate(row, f"the rows, row {i + 1}")
        return datasets.Dataset.from_list(every_key(source)), []
    if source == DEFAULT_DATASET:
        source = str(DEFAULT_DATA_PATH)
    path = Path(str(source)).expanduser()
    if path.suffix in _LOCAL_KINDS or path.exists():
        check_file(path)
        kind = _LOCAL_KINDS.get(path.suffix)
        if kind is None:
            raise DataError(f"Cannot read {path}: use a .jsonl, .json, .csv or .parquet file.")
        if kind in ("json", "csv"):  # read here, so a broken line is named by its number, and text is as written
            rows = read_json_rows(path, limit) if kind == "json" else read_csv_rows(path, limit)
            _check_layout(rows, path)  # the same rule and message as data.check, before pyarrow's own
            return _from_rows(rows, path), rows.notes
        try:
            dataset = datasets.load_dataset(kind, data_files=str(path), split="train")
        except Exception as exc:  # pyarrow parse errors: one line that names the file
            raise DataError(f"Cannot read {path} as {path.suffix[1:].upper()}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        if len(dataset) == 0:
            raise DataError(f"{path} has no rows. Add rows (one example each), or use the embedded "
                            f"{DEFAULT_DATASET!r} to try things out.")
        return dataset, []
    try:
        return datasets.load_dataset(str(source), split=split), []
    except Exception as exc:  # the Hub's errors vary by version; the advice does not
        raise DataError(
            f"Could not load data set {source!r}: {exc}. Use a local .jsonl/.csv file, nbkit's embedded "
            f"{DEFAULT_DATASET!r}, or a Hub id you can reach."
        ) from exc


def read_csv_rows(path: Path, limit: int | None = None) -> "Rows":
    """Rows of a CSV file with a header, every cell the text it holds (an empty cell: None)."""
    import csv

    said: list[list[str]] = [[]]

    def texts():
        for _, line, notes in decoded_lines(path):
            said[0] = notes
            yield line

    reader = csv.reader(texts())
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise DataError(f"{path} has no header row: the first line must name the columns, e.g. instruction,output")
    rows = Rows()
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        rows.append({name: (cells[i] if i < len(cells) and cells[i] != "" else None) for i, name in enumerate(header)})
        rows.lines.append(reader.line_num)
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise DataError(f"{path} has a header ({', '.join(header)}) but no rows: add one example a line under it.")
    rows.notes = said[0]
    return rows


class Rows(list):
    """Rows read from a file, with the line each came from (`lines`) and what was said about reading it
    (`notes`: the encoding, when it was not UTF-8)."""

    def __init__(self, rows=(), lines=(), notes=()):
        super().__init__(rows)
        self.lines, self.notes = list(lines), list(notes)


_COMPRESSED = {b"\x1f\x8b": "gzip", b"PK\x03\x04": "zip", b"BZh": "bzip2", b"\xfd7zXZ": "xz",
               b"(\xb5/\xfd": "zstd"}
_UNPACK = {"gzip": "gunzip FILE", "zip": "unzip FILE", "bzip2": "bunzip2 FILE", "xz": "unxz FILE",
           "zstd": "unzstd FILE"}


def check_file(path: Path) -> None:
    """What makes a local data file unreadable as a whole, each as one line that says what to do."""
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix in _LOCAL_KINDS)[:3]
        hint = f", e.g. {path / found[0]}" if found else ""
        raise DataError(f"{path} is a folder, not a data file: give one .jsonl, .json, .csv or .parquet file in "
                        f"it{hint}.")
    if not path.is_file():
        raise DataError(f"Data file {path} does not exist. Give a JSONL, JSON, CSV or Parquet file, or a Hub id.")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except PermissionError:
        raise DataError(f"{path} cannot be read (permission denied): give yourself read access (chmod u+r "
                        f"{path}) or copy it somewhere you can read.") from None
    kind = next((k for magic, k in _COMPRESSED.items() if head.startswith(magic)), None)
    if kind and path.suffix != ".parquet":
        raise DataError(f"{path} is {kind}-compressed: decompress it first ({_UNPACK[kind].replace('FILE', str(path))})"
                        f" and give the .jsonl/.json/.csv file inside.")
    if not head:
        raise DataError(f"{path} is empty (0 bytes), so it has no rows: add examples (one JSON object a line), or "
                        f"use the embedded {DEFAULT_DATASET!r} to try things out.")


def _as_written(pairs):
    """JSON values as the file writes them: numbers keep their text ("4" stays "4", not 4.0), true/false stay
    lower case; what is text to train on is never re-spelled by Python."""
    return {k: ("true" if v is True else "false" if v is False else v) for k, v in pairs}


def _loads(text: str):
    return json.loads(text, parse_float=str, parse_int=str, object_pairs_hook=_as_written)


def read_json_rows(path: Path, limit: int | None = None) -> Rows:
    """Rows of a JSONL file (one object a line; only the first `limit` rows are read) or a JSON file (a list of
    objects), values as written, with the line of the first broken one named."""
    check_file(path)
    lines = decoded_lines(path)
    if path.suffix == ".json":
        numbered = list(lines)
        notes = numbered[-1][2] if numbered else []
        text = "".join(t for _, t, _ in numbered)
        if text.lstrip()[:1] in ("[", "{"):
            return _json_document(path, text, notes)
        lines = iter(numbered)
    rows = Rows()
    for number, line, notes in lines:
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if not rows and line.lstrip().startswith("[") and path.suffix == ".jsonl":
            raise DataError(f"{path} holds a JSON array, not JSON Lines: rename it to .json, or write one object a "
                            'line, e.g. {"instruction": "...", "output": "..."}.')
        try:
            row = _loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number} is not valid JSON ({exc.msg}, column {exc.colno}): fix or "
                            f"delete that line. It starts: {line[:60]!r}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {number} is {type(row).__name__}, not an object: each line must be "
                            'one example such as {"instruction": "...", "output": "..."}.')
        refuse_lone_surrogate(row, f"{path} line {number}")
        rows.append(row)
        rows.lines.append(number)
        rows.notes = notes
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise DataError(f"{path} has no rows. Add examples (one JSON object a line), or use the embedded "
                        f"{DEFAULT_DATASET!r} to try things out.")
    return rows


def _json_document(path: Path, text: str, notes: list[str]) -> Rows:
    try:
        data = _loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. Fix "
                        "that spot (a missing comma or quote is usual).") from None
    rows = data.get("data", data.get("rows")) if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path} must hold a list of objects (one per example), e.g. "
                        '[{"instruction": "...", "output": "..."}].')
    if not rows:
        raise DataError(f"{path} has no rows. Add examples, or use the embedded {DEFAULT_DATASET!r} to try things "
                        "out.")
    for i, row in enumerate(rows):
        refuse_lone_surrogate(row, f"{path} row {i + 1}")
    return Rows(rows, [None] * len(rows), notes)


def _from_rows(rows: list[dict], path: Path):
    import datasets

    try:
        return datasets.Dataset.from_list(every_key(rows))
    except Exception as exc:  # pyarrow: one column holds text in some rows and lists in others
        raise DataError(f"{path}: the rows do not share one layout ({str(exc).splitlines()[0][:200]}). Make each "
                        "field hold the same kind of value in every row.") from None


def every_key(rows: list[dict]) -> list[dict]:
    """The rows with every key any of them has (None where a row lacks it): datasets takes its columns from the
    first row alone, and would drop the fields of rows written in another format."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return [row if len(row) == len(keys) else {k: row.get(k) for k in keys} for row in rows]


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
