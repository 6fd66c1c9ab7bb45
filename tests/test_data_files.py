"""Reading a user's data file: what a broken one says, before anything heavy is imported."""
import json
import subprocess
import sys

import pytest

from nbkit import DataError, RunConfig
from nbkit.loading import data


def test_mixed_layouts_are_named_by_field_and_row(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"instruction": "a", "output": "b", "tags": "x"}, {"instruction": "c", "output": None},
            {"instruction": "c", "output": "d", "tags": ["x", "y"]}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"'tags' is text in row 1 and a list in row 3"):
        data.check(RunConfig(dataset=str(path)))
    rows[2]["instruction"] = ["c"]  # a field that is trained on: refused as not text, with its line
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"line 3: 'instruction' is a list"):
        data.check(RunConfig(dataset=str(path)))


def test_checking_a_jsonl_file_imports_no_ml_library(tmp_path):
    """The form checks the data while Unsloth may still be importing on another thread: the check must not
    touch datasets or transformers (datasets reaches into a half-imported transformers)."""
    code = ("import sys; from nbkit import RunConfig; from nbkit.loading import data; print(data.check(RunConfig()));"
            "print(sorted(m for m in ('datasets', 'transformers', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "rows, alpaca format" in out and out.strip().endswith("[]")
