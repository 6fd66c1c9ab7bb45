"""Bytes read as the text they were written as: UTF-8 with or without a byte-order mark, else the one encoding
that reads the whole file (and is said), never U+FFFD; text that is no text (a lone surrogate) refused by line."""
from __future__ import annotations

import codecs
import re
from pathlib import Path

from ..errors import DataError


def decoded_lines(path: Path):
    """(line number, text) of a text file, read as written: UTF-8 with or without a byte-order mark; another
    encoding only when it can be told (charset-normalizer), and then said in `notes`; never U+FFFD."""
    encoding, notes, seen_non_ascii = "utf-8", [], False
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                if encoding != "utf-8" or seen_non_ascii:  # two encodings in one file: no way to read it right
                    raise DataError(f"{path} line {number} is not {encoding} while earlier lines are: save the whole "
                                    "file in one encoding (UTF-8).") from None
                encoding = _guess_encoding(path, number, raw[exc.start])
                notes.append(f"{path.name} is not UTF-8: read as {encoding} (line {number} is the first that is "
                             "not UTF-8). Save it as UTF-8 to be sure of every character.")
                text = raw.decode(encoding)
            seen_non_ascii = seen_non_ascii or not raw.isascii()
            yield number, text, notes


# Where cp1252 reads the whole file, the one Windows uses for Western European text is preferred over the DOS and
# Mac code pages: on a short file charset-normalizer often ranks one of those first (cp775 for "café?", "naïve
# “quoted”", which would train "na’ve ōquotedö"). Against another Windows or ISO code page (cp1250 for Polish,
# cp1253 for Greek) cp1252 wins only a tie: there the language, not the platform, decides.
PREFERRED_LEGACY = "cp1252"
_WIDESPREAD = re.compile(r"cp125\d|iso8859_\d+|latin_1|koi8_\w|utf_\d+.*")


def _guess_encoding(path: Path, number: int, byte: int) -> str:
    """The encoding of the whole file (never of its first lines alone): among the encodings that decode every
    byte of it, the cleanest reading, with cp1252 preferred as said above."""
    from charset_normalizer import from_bytes
    from charset_normalizer.utils import is_multi_byte_encoding

    raw = path.read_bytes()
    fits = [m for m in from_bytes(raw) if _decodes(raw, m.encoding)]
    best = min(fits, key=lambda m: (m.chaos, -m.coherence), default=None)
    if best is None or best.encoding in ("utf_8", "ascii") or best.chaos > 0.2:
        raise DataError(f"{path} line {number} is not UTF-8 (byte {byte:#04x}) and its encoding cannot be told: "
                        f"convert it to UTF-8, e.g. iconv -f cp1252 -t utf-8 {path.name} > fixed{path.suffix}")
    cp1252 = next((m for m in fits if m.encoding == PREFERRED_LEGACY), None)
    if cp1252 is None or best is cp1252:
        return best.encoding
    rare = not (_WIDESPREAD.fullmatch(best.encoding) or is_multi_byte_encoding(best.encoding))
    return PREFERRED_LEGACY if rare or cp1252.chaos <= best.chaos else best.encoding


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def lone_surrogate(value, name: str = "") -> str | None:
    """The field (e.g. 'output', 'messages[1].content') of the first text holding half of a UTF-16 pair (a JSON
    escape such as \\ud800 alone): no character, so it cannot be stored, tokenized or trained. None if none."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return name or "the text"
        return None
    if isinstance(value, dict):
        items = [(f"{name}.{k}" if name else str(k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    return next((found for field, v in items if (found := lone_surrogate(v, field))), None)


def refuse_lone_surrogate(row, where: str) -> None:
    found = lone_surrogate(row)
    if found:
        raise DataError(f"{where}: {found!r} holds a lone surrogate (an escape like \\ud800 without its pair), "
                        "which is no character and cannot be trained. Fix or delete that escape (a character "
                        "beyond U+FFFF is written as a pair, e.g. \\ud83d\\ude00).")
