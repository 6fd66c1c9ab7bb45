"""Text as written: the encoding decided on the whole file, cp1252 where it reads the file as cleanly as a rarer
code page, and said; a lone surrogate refused with its line before anything is loaded."""
import json

import pytest

from nbkit import DataError, RunConfig
from nbkit.loading import data
from nbkit.loading.data import IGNORE

# the observed file: a short cp1252 JSONL that was read as cp775 and trained "na’ve ōquotedö"
SHORT_CP1252 = ('{"instruction": "caf\u00e9?", "output": "na\u00efve \u201cquoted\u201d"}\n').encode("cp1252")


def test_a_short_cp1252_file_is_read_as_cp1252_and_said(tmp_path, tokenizer):
    path = tmp_path / "d.jsonl"
    path.write_bytes(SHORT_CP1252)
    assert b"caf\xe9?" in SHORT_CP1252 and b"na\xefve \x93quoted\x94" in SHORT_CP1252
    summary = data.check(RunConfig(dataset=str(path)))
    assert summary.startswith("data: 1 rows, alpaca format") and "is not UTF-8: read as cp1252" in summary
    prepared = data.prepare(RunConfig(dataset=str(path), max_seq_length=128), tokenizer)
    row = prepared.train[0]
    answer = tokenizer.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab != IGNORE])
    prompt = tokenizer.decode(row["input_ids"])
    assert answer.startswith("na\u00efve \u201cquoted\u201d") and "caf\u00e9?" in prompt
    assert "read as cp1252" in prepared.summary()


@pytest.mark.parametrize("text, encoding", [
    ('{"instruction": "Zażółć gęślą jaźń, proszę.", "output": "Łódź, Gdańsk i Kraków."}\n', "cp1250"),
    ('{"instruction": "Καλημέρα κόσμε, τι κάνεις;", "output": "Ευχαριστώ, καλά."}\n', "cp1253"),
])
def test_a_file_cp1252_would_garble_keeps_its_own_code_page(tmp_path, tokenizer, text, encoding):
    """cp1252 is preferred only where it reads the file as cleanly: Polish or Greek text is not turned into
    Western European mojibake."""
    path = tmp_path / "d.jsonl"
    path.write_bytes(text.encode(encoding))
    summary = data.check(RunConfig(dataset=str(path)))
    assert "read as cp1252" not in summary and "is not UTF-8: read as" in summary
    rows = data.load_rows(str(path))
    assert rows[0]["output"] == json.loads(text)["output"]


def test_the_encoding_is_decided_on_the_whole_file(tmp_path):
    """A file whose first non-UTF-8 line alone would fit a rarer code page, and whose later lines only cp1252
    reads cleanly, is read as cp1252 throughout: no line is read in another encoding than the rest."""
    rows = [{"instruction": "caf\u00e9?", "output": "oui"}] + [
        {"instruction": f"Question {i}: \u201cquoted\u201d \u2014 na\u00efve r\u00e9sum\u00e9?", "output": "\u20ac5"}
        for i in range(3)]
    path = tmp_path / "d.jsonl"
    path.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("cp1252"))
    assert [r["output"] for r in data.load_rows(str(path))] == ["oui"] + ["\u20ac5"] * 3
    assert "read as cp1252" in data.check(RunConfig(dataset=str(path)))


@pytest.mark.parametrize("line, field", [
    (r'{"instruction": "q", "output": "a \ud800 b"}', "'output'"),
    (r'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "\udc00"}]}',
     "'messages[1].content'"),
])
def test_a_lone_surrogate_is_refused_by_line_in_the_check(tmp_path, line, field):
    """Observed: a line holding \\ud800 passed the check, then failed after the model loaded with advice about
    the rows' "layout"."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "fine", "output": "ok"}\n' + line + "\n")
    with pytest.raises(DataError) as err:
        data.check(RunConfig(dataset=str(path)))
    message = str(err.value)
    assert "line 2" in message and field in message and "lone surrogate" in message and "layout" not in message
    with pytest.raises(DataError, match="line 2: .*lone surrogate"):
        data.load_rows(str(path))


def test_a_lone_surrogate_in_rows_given_in_memory_is_named(tokenizer):
    rows = [{"instruction": "q", "output": "ok"}, {"instruction": "q\ud800", "output": "a"}]
    with pytest.raises(DataError, match=r"row 2: 'instruction' holds a lone surrogate"):
        data.prepare(RunConfig(), tokenizer, rows=rows)
    # a pair (a character beyond U+FFFF written as JSON escapes) is a character, and fine
    assert data.load_rows([{"instruction": "q", "output": json.loads(r'"\ud83d\ude00"')}])[0]["output"] == "\U0001f600"
