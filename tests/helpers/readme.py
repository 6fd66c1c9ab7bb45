"""What the README promises, read from the README itself (so a test checks the text a reader sees)."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent.parent / "README.md"


def readme_answers() -> tuple[str, str]:
    """The tiny model's answers before and after fine-tuning, as the README quotes them (each in its quotes, as
    nbkit prints a repr: "'The capital of France is Paris.'")."""
    found = re.search(r"`('[^`]+')` before, `('[^`]+')` after", README.read_text())
    assert found, "the README no longer quotes the answers before and after training"
    return found.group(1), found.group(2)
