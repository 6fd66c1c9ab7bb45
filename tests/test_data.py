import json

import pytest

from nbkit import DataError, RunConfig
from nbkit.loading import data
from nbkit.loading.data import IGNORE, assistant_spans, detect_format, load_rows, prepare, to_messages, tokenize_example


def answer_text(tokenizer, row):
    return tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE])


def test_shipped_data_set_masks_prompts(tokenizer):
    prepared = prepare(RunConfig(max_seq_length=256), tokenizer)
    assert prepared.format == "alpaca" and prepared.rows_in >= 300
    raw = load_rows(RunConfig().dataset)
    for i in (0, 57, 200):
        row, src = prepared.train[i], raw[i]
        n_prompt = next(j for j, label in enumerate(row["labels"]) if label != IGNORE)
        prompt = tokenizer.decode(row["input_ids"][:n_prompt])
        assert all(label == IGNORE for label in row["labels"][:n_prompt])
        assert src["instruction"] in prompt and prompt.endswith("<|im_start|>assistant\n")
        assert answer_text(tokenizer, row) == src["output"] + "<|im_end|>\n"


@pytest.mark.parametrize("row, fmt", [
    ({"instruction": "Add 2 and 3.", "input": "", "output": "5"}, "alpaca"),
    ({"prompt": "Add 2 and 3.", "completion": "5"}, "prompt_completion"),
    ({"messages": [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}]}, "messages"),
    ({"conversations": [{"from": "human", "value": "Add 2 and 3."}, {"from": "gpt", "value": "5"}]}, "sharegpt"),
])
def test_every_format_trains_on_the_answer_only(tokenizer, row, fmt):
    assert detect_format(row) == fmt
    out = tokenize_example(tokenizer, to_messages(row, fmt), 128)
    assert answer_text(tokenizer, out) == "5<|im_end|>\n"
    assert out["labels"].count(IGNORE) > 5


def test_multi_turn_trains_every_assistant_turn(tokenizer):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye"}]
    text, spans = assistant_spans(tokenizer, msgs)
    assert [text[a:b] for a, b in spans] == ["Hello<|im_end|>\n", "Goodbye<|im_end|>\n"]
    out = tokenize_example(tokenizer, msgs, 256)
    assert answer_text(tokenizer, out) == "Hello<|im_end|>\nGoodbye<|im_end|>\n"


def test_alpaca_input_is_part_of_the_prompt():
    msgs = to_messages({"instruction": "Sort.", "input": "3, 1", "output": "1, 3"}, "alpaca")
    assert msgs[0] == {"role": "user", "content": "Sort.\n\n3, 1"}


def test_unknown_columns_name_the_fix():
    with pytest.raises(DataError) as err:
        detect_format(["question", "answer"])
    text = str(err.value)
    assert "['question', 'answer']" in text and "rename_column" in text and "instruction" in text


def test_explicit_format_with_missing_column():
    with pytest.raises(DataError, match=r"needs column\(s\) \['output'\]"):
        detect_format(["instruction", "response"], "alpaca")


def test_bad_sharegpt_role(tokenizer):
    with pytest.raises(DataError, match="unknown 'from' value 'robot'"):
        to_messages({"conversations": [{"from": "robot", "value": "x"}]}, "sharegpt")


def test_local_csv_and_jsonl(tmp_path, tokenizer):
    csv = tmp_path / "d.csv"
    csv.write_text("instruction,output\nSay hi,hi\nSay bye,bye\n")
    prepared = prepare(RunConfig(dataset=str(csv)), tokenizer)
    assert len(prepared.train) == 2 and prepared.format == "alpaca"
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) for i in range(12)))
    prepared = prepare(RunConfig(dataset=str(jsonl), eval_fraction=0.25), tokenizer)
    assert len(prepared.train) + len(prepared.eval) == 12 and len(prepared.eval) == 3


def test_missing_file_and_unreachable_hub_id(tmp_path, tokenizer):
    with pytest.raises(DataError, match="does not exist"):
        load_rows(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="Use a local .jsonl/.csv file"):
        load_rows("someone/not-a-dataset-xyz")


def test_rows_losing_their_answer_are_dropped_and_counted(tokenizer):
    rows = [{"instruction": "word " * 200, "output": "x"}, {"instruction": "short", "output": "y"}]
    prepared = prepare(RunConfig(max_seq_length=64), tokenizer, rows=rows)
    assert prepared.dropped == 1 and prepared.truncated == 1 and len(prepared.train) == 1
    assert "Dropped 1 row(s)" in prepared.summary()
    with pytest.raises(DataError, match="raise max_seq_length"):
        prepare(RunConfig(max_seq_length=64), tokenizer, rows=rows[:1])


def test_no_chat_template_is_explained(tokenizer):
    bare = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    bare.chat_template = None
    with pytest.raises(DataError, match="no chat template"):
        assistant_spans(bare, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])


USER, ANSWER = {"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}


@pytest.mark.parametrize("fmt, row, missing", [
    ("alpaca", {"instruction": "q", "output": "a"}, False),
    ("alpaca", {"instruction": "q", "output": 0}, False),  # a number is an answer
    ("alpaca", {"instruction": "q", "output": None}, True),
    ("alpaca", {"instruction": "q", "output": " \n"}, True),
    ("alpaca", {"instruction": "", "output": "a"}, True),
    ("alpaca", {"instruction": "q"}, True),
    ("prompt_completion", {"prompt": "q", "completion": "a"}, False),
    ("prompt_completion", {"prompt": "q", "completion": None}, True),
    ("prompt_completion", {"prompt": " ", "completion": "a"}, True),
    ("messages", {"messages": [USER, ANSWER]}, False),
    ("messages", {"messages": [USER]}, True),  # nothing from the assistant
    ("messages", {"messages": [USER, {**ANSWER, "content": ""}]}, True),
    ("messages", {"messages": [USER, {**ANSWER, "content": None}]}, True),
    ("messages", {"messages": [USER, "5"]}, True),  # a turn that is not a dict
    ("messages", {"messages": []}, True),
    ("messages", {"messages": None}, True),
    ("messages", {"messages": "Add 2 and 3."}, True),
    ("messages", {"conversations": [USER, ANSWER]}, True),  # the format names the column read
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}, False),
    ("sharegpt", {"conversations": [{"from": "Human", "value": "q"}, {"from": "GPT", "value": "a"}]}, False),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"}, {"from": "model", "value": "a"}]}, False),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"}]}, True),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": " "}]}, True),
    # a turn is read under either spelling (role/content or from/value): an answer is an answer
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"}, {"role": "assistant", "value": "a"}]}, False),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "content": "a"}]}, False),
    ("sharegpt", {"conversations": [{"from": "human", "value": "q"}, {"from": "chatgpt", "value": "a"}]}, False),
    ("sharegpt", {"conversations": [{"from": "system", "value": ""}, {"from": "human", "value": "q"},
                                    {"from": "gpt", "value": "a"}]}, False),  # an empty system prompt is no reason
    ("sharegpt", {"messages": [USER, ANSWER]}, True),
])
def test_a_row_without_an_answer_is_told_apart_in_every_format(fmt, row, missing):
    from nbkit.loading.data import missing_answer

    assert missing_answer(row, fmt) is missing


def test_a_template_that_rewrites_earlier_turns_still_labels_each_answer(tokenizer):
    """A template whose rendering of a prefix is not a prefix of the whole (here: it prints the number of turns
    first, as templates that strip earlier reasoning also break it) falls back to finding each answer's text,
    after the previous one, with the end token that follows it."""
    import copy

    counting = copy.deepcopy(tokenizer)
    counting.chat_template = ("turns={{ messages|length }}\n{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
                              "{{ m['content'] }}<|im_end|>\n{% endfor %}"
                              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    msgs = [{"role": "user", "content": "Say 5"}, {"role": "assistant", "content": "5"},
            {"role": "user", "content": "Again"}, {"role": "assistant", "content": "5"}]
    text, spans = assistant_spans(counting, msgs)
    assert text.startswith("turns=4\n")
    first, second = (text[a:b] for a, b in spans)
    assert first == second == "5<|im_end|>"  # the answer and the end token after it (the tokenizer's eos)
    assert spans[0][1] <= spans[1][0]  # the second answer is found after the first, not at it again
    assert text[:spans[1][0]].endswith("<|im_start|>assistant\n")
    with pytest.raises(DataError, match="Could not find an assistant answer"):
        counting.chat_template = "{{ messages|length }}{% for m in messages %}{{ m['role'] }}{% endfor %}"  # no content
        assistant_spans(counting, msgs)


def test_a_conversation_without_an_assistant_turn_is_refused(tokenizer):
    with pytest.raises(DataError, match="no assistant turn"):
        assistant_spans(tokenizer, [{"role": "user", "content": "Hi"}])


def test_check_reads_the_data_without_the_model(tmp_path, monkeypatch):
    """check(): rows, format and rows without an answer, from the file alone; the shipped set by its name; a Hub id
    checked at once (offline: from the local cache, or refused); max_samples counted; every answer missing refused
    with the fix."""
    from huggingface_hub import constants

    from nbkit.loading.data import check

    path = tmp_path / "d.jsonl"
    rows = [{"instruction": "q1", "output": "a"}, {"instruction": "q2", "output": ""},
            {"instruction": "q3", "output": None}, {"instruction": "q4", "output": "b"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert check(RunConfig(dataset=str(path))) == "data: 4 rows, alpaca format, 2 without an answer (will be skipped)"
    assert check(RunConfig(dataset=str(path), max_samples=1)) == "data: 1 rows, alpaca format"
    shipped = len(load_rows(RunConfig().dataset))
    assert check(RunConfig()) == f"data: {shipped} rows, alpaca format"
    hub = RunConfig(dataset="someone/some-set")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(DataError, match="cannot be reached: this machine is offline .* not in the local cache"):
        check(hub)
    (tmp_path / "hub" / "datasets--someone--some-set").mkdir(parents=True)
    assert check(hub) == "data: 'someone/some-set' (Hub data set, from the local cache)"
    path.write_text("\n".join(json.dumps(r) for r in rows[1:3]) + "\n")
    with pytest.raises(DataError, match=r"None of the 2 rows has both a prompt and an answer \(alpaca format"):
        check(RunConfig(dataset=str(path)))
    csv = tmp_path / "d.csv"
    csv.write_text("prompt,completion\nq,a\nq2,\n")
    assert check(RunConfig(dataset=str(csv))) == ("data: 2 rows, prompt_completion format, 1 without an answer "
                                                  "(will be skipped)")


def test_preview_shows_the_first_rows_with_an_answer_as_trained(tmp_path, tokenizer):
    """preview(): each token with whether it is trained on; rows without an answer skipped; at most n rows."""
    from nbkit.loading.data import preview

    path = tmp_path / "d.jsonl"
    rows = [{"instruction": "first", "output": ""}, {"instruction": "second", "output": "yes"},
            {"instruction": "third", "output": "no"}, {"instruction": "fourth", "output": "maybe"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    shown = preview(RunConfig(dataset=str(path), max_seq_length=128), tokenizer, n=2)
    assert len(shown) == 2
    for tokens, (question, answer) in zip(shown, [("second", "yes"), ("third", "no")]):
        prompt = "".join(t for t, trained in tokens if not trained)
        trained = "".join(t for t, trained in tokens if trained)
        assert question in prompt and answer not in prompt
        assert trained.strip().startswith(answer) and trained.endswith("<|im_end|>\n")
        assert not tokens[0][1] and tokens[-1][1]  # it starts with the prompt and ends with the answer
    assert len(preview(RunConfig(dataset=str(path), max_seq_length=128), tokenizer, n=5)) == 3


def test_prepare_takes_max_samples_first_and_splits_off_eval_rows(tokenizer, capsys):
    rows = [{"instruction": f"question {i}", "output": f"answer {i}" if i % 5 else ""} for i in range(40)]
    few = prepare(RunConfig(max_seq_length=64, max_samples=12), tokenizer, rows=rows)
    assert few.rows_in == 12 and few.dropped == 3 and len(few.train) == 9 and few.eval is None
    assert "Dropped 3 row(s) with no answer (missing, null or empty)." in few.summary()
    assert capsys.readouterr().out.startswith("nbkit: 9 training rows (alpaca format), 0 eval rows; 0 truncated")
    split = prepare(RunConfig(max_seq_length=64, eval_fraction=0.25), tokenizer, rows=rows)
    assert (len(split.train), len(split.eval)) == (24, 8) and split.rows_in == 40
    with pytest.raises(DataError, match="The data set is empty"):
        prepare(RunConfig(), tokenizer, rows=[])


def test_a_row_exactly_max_length_is_not_truncated_and_attends_everywhere(tokenizer):
    msgs = to_messages({"instruction": "Add 2 and 3.", "output": "5"}, "alpaca")
    n = len(tokenize_example(tokenizer, msgs, 10_000)["input_ids"])
    exact, cut = tokenize_example(tokenizer, msgs, n), tokenize_example(tokenizer, msgs, n - 1)
    assert not exact["truncated"] and cut["truncated"] and len(cut["input_ids"]) == n - 1
    assert exact["attention_mask"] == [1] * n


def test_ten_rows_are_enough_for_an_eval_split_and_the_seed_decides_it(tokenizer):
    rows = [{"instruction": f"question {i}", "output": f"answer {i}"} for i in range(10)]
    splits = [prepare(RunConfig(max_seq_length=64, eval_fraction=0.3, seed=s), tokenizer, rows=rows) for s in (1, 1, 2)]
    assert all(len(p.eval) == 3 for p in splits)
    ids = [sorted(tuple(r) for r in p.eval["input_ids"]) for p in splits]
    assert ids[0] == ids[1] != ids[2]
    assert prepare(RunConfig(max_seq_length=64, eval_fraction=0.3), tokenizer, rows=rows[:9]).eval is None


def test_the_summary_counts_what_happened_to_the_rows(tmp_path, tokenizer, capsys):
    """Kept, truncated, dropped (and why), duplicated, split off for eval: and an eval split too small to make
    is said, not silently skipped."""
    rows = [{"instruction": "Say hi.", "output": "Hi."}] * 3 + [{"instruction": "q", "output": None}] + \
        [{"instruction": f"Count to {i}.", "output": " ".join(str(n) for n in range(i))} for i in range(1, 5)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepared = data.prepare(RunConfig(dataset=str(path), eval_fraction=0.25, max_seq_length=256), tokenizer)
    text = prepared.summary()
    assert "7 training rows (alpaca format), 0 eval rows; 0 truncated to max_seq_length, 1 dropped, 2 duplicated, " \
           "of 8 rows read." in text
    assert "Dropped 1 row(s) with no answer" in text and "2 row(s) repeat an earlier row exactly: kept" in text
    assert "No eval set: eval_fraction=0.25 of 7 rows is too few to split (at least 10 rows are needed)." in text
    assert text in capsys.readouterr().out  # said when it happens, not only on request


def test_max_samples_reads_only_the_rows_it_takes(tmp_path, tokenizer):
    """A big file costs what the rows taken cost: with max_samples the reader stops there (a broken line further
    on is never read)."""
    good = "".join(json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) + "\n" for i in range(20))
    path = tmp_path / "d.jsonl"
    path.write_text(good + "{this line is broken\n")
    assert data.check(RunConfig(dataset=str(path), max_samples=16)) == "data: 16 rows, alpaca format"
    assert len(data.prepare(RunConfig(dataset=str(path), max_samples=16), tokenizer).train) == 16
    with pytest.raises(DataError, match="line 21 is not valid JSON"):
        data.check(RunConfig(dataset=str(path)))
