"""Rows as written: each row's format recognised on its own (a file may mix alpaca, ShareGPT and messages rows),
ShareGPT speakers named as the tools that write them name them, an unknown speaker refused by line before any
model loads, and nothing with an answer dropped as answerless."""
import json

import pytest

from nbkit import DataError, RunConfig
from nbkit.loading import data
from nbkit.loading.data import IGNORE

ALPACA = {"instruction": "Name a primary colour.", "output": "Red."}
SHAREGPT = {"conversations": [{"from": "human", "value": "What is 2 + 2?"}, {"from": "gpt", "value": "Four."}]}
MESSAGES = {"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}]}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def answers(tokenizer, prepared) -> list[str]:
    return [tokenizer.decode([t for t, lab in zip(r["input_ids"], r["labels"]) if lab != IGNORE])
            for r in prepared.train]


def test_a_file_mixing_formats_trains_every_row(tmp_path, tokenizer):
    """Observed: the format was decided once per file, and the rows of the other shapes were dropped as "without
    an answer" (training ran on a third of the data)."""
    path = write_jsonl(tmp_path / "mixed.jsonl", [ALPACA, SHAREGPT, MESSAGES, ALPACA | {"output": "Blue."}])
    assert data.check(RunConfig(dataset=str(path))) == "data: 4 rows, mixed: 2 alpaca, 1 messages, 1 sharegpt format"
    prepared = data.prepare(RunConfig(dataset=str(path), max_seq_length=128), tokenizer)
    assert prepared.dropped == 0 and len(prepared.train) == 4
    trained = answers(tokenizer, prepared)
    for answer in ("Red.", "Four.", "Paris.", "Blue."):
        assert any(a.startswith(answer) for a in trained), (answer, trained)
    assert prepared.format == "mixed: 2 alpaca, 1 messages, 1 sharegpt"


@pytest.mark.parametrize("who", ["chatgpt", "bing", "bard", "ChatGPT", " gpt ", "model", "assistant", "output"])
def test_sharegpt_assistants_by_any_common_name_are_trained(tmp_path, tokenizer, who):
    """Observed: ShareGPT turns from "chatgpt" (as ShareGPT dumps write them) were dropped as answerless."""
    row = {"conversations": [{"from": "system", "value": ""}, {"from": "human", "value": "Say yes."},
                             {"from": who, "value": "Yes."}]}
    path = write_jsonl(tmp_path / "d.jsonl", [row, SHAREGPT])
    assert data.check(RunConfig(dataset=str(path))) == "data: 2 rows, sharegpt format"
    prepared = data.prepare(RunConfig(dataset=str(path), max_seq_length=128), tokenizer)
    assert prepared.dropped == 0 and any(a.startswith("Yes.") for a in answers(tokenizer, prepared))


def test_turns_spelled_either_way_are_read(tmp_path, tokenizer):
    """A conversations column of role/content turns (as many Hub sets write it), and a messages column of
    from/value turns, are the same conversation: trained, not dropped."""
    rows = [{"conversations": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]},
            {"messages": [{"from": "human", "value": "Bye?"}, {"from": "gpt", "value": "Goodbye."}]}]
    prepared = data.prepare(RunConfig(max_seq_length=128), tokenizer, rows=rows)
    assert prepared.dropped == 0
    trained = answers(tokenizer, prepared)
    assert any(a.startswith("Hello.") for a in trained) and any(a.startswith("Goodbye.") for a in trained)


def test_an_unknown_speaker_is_named_before_the_model_loads(tmp_path, tokenizer):
    """Observed: a speaker nbkit did not know made the row "answerless", and it was dropped without a word."""
    row = {"conversations": [{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}]}
    path = write_jsonl(tmp_path / "d.jsonl", [SHAREGPT, row])
    with pytest.raises(DataError) as err:
        data.check(RunConfig(dataset=str(path)))
    message = str(err.value)
    assert "\n" not in message and "line 2" in message and "conversations[1]" in message and "'robot'" in message
    assert "gpt, chatgpt, bing, bard" in message
    with pytest.raises(DataError, match=r"row 2: conversations\[1\] has unknown 'from' value 'robot'"):
        data.prepare(RunConfig(dataset=str(path)), tokenizer)


def test_a_row_in_no_format_is_named_not_dropped(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [ALPACA, {"question": "q", "answer": "a"}])
    with pytest.raises(DataError, match=r"line 2 is in no format nbkit knows \(it fills \['question', 'answer'\]\)"):
        data.check(RunConfig(dataset=str(path)))


def test_only_rows_that_truly_lack_an_answer_are_dropped(tmp_path, tokenizer):
    rows = [ALPACA, {"instruction": "q", "output": None}, SHAREGPT,
            {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": " "}]},
            {"messages": [{"role": "user", "content": "q"}]}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert data.check(RunConfig(dataset=str(path))).endswith(", 3 without an answer (will be skipped)")
    prepared = data.prepare(RunConfig(dataset=str(path), max_seq_length=128), tokenizer)
    assert prepared.dropped == 3 and len(prepared.train) == 2


def test_an_explicit_format_reads_every_row_in_it(tmp_path):
    """dataset_format set by the user: every row is read in that format (the mixed file's other rows have no
    answer in it, and are counted as such)."""
    path = write_jsonl(tmp_path / "d.jsonl", [ALPACA, SHAREGPT])
    assert data.check(RunConfig(dataset=str(path), dataset_format="alpaca")) == (
        "data: 2 rows, alpaca format, 1 without an answer (will be skipped)")
