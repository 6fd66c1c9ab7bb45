"""Files shipped inside the package: the default instruction data set and the tiny pretrained model."""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA_PATH = HERE / "nbkit-instruct-mini.jsonl"
TINY_CHAT_PATH = HERE / "tiny-chat"  # made by scripts/make_demo_model.py
TINY_MODEL = "nbkit/tiny-llama"  # the id a RunConfig names the tiny model by (the default model)


def iter_texts(path: Path = DEFAULT_DATA_PATH):
    """Every string field of a JSONL file, to train the tiny tokenizer on."""
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            for value in json.loads(line).values():
                if isinstance(value, str) and value:
                    yield value
