"""`nbkit notebook`: the `-p NAME VALUE` pairs are checked against the notebook's own parameters cell before a
kernel starts (a misspelt name suggests the right one, a value of the wrong kind says what it takes), and typed
as that cell types them. The runs themselves are in tests/test_notebooks.py and tests/test_bad_input.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from nbkit.cli_notebook import _checked_parameters
from nbkit.errors import ConfigError

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "8gb.ipynb"


def test_parameters_are_typed_as_the_notebooks_cell_types_them():
    params = _checked_parameters(NOTEBOOK, [("max_steps", "10"), ("model", "'nbkit/tiny-llama'")])
    assert params == {"max_steps": 10, "model": "nbkit/tiny-llama"}


@pytest.mark.parametrize("pair, message", [
    (("max_step", "10"), r"8gb.ipynb has no parameter 'max_step' \(did you mean 'max_steps'\?\); its parameters are"),
    (("max_steps", "'ten'"), r"-p max_steps 'ten': max_steps takes a whole number \(default 60\), not \"'ten'\""),
])
def test_a_wrong_parameter_is_refused_before_anything_runs(pair, message):
    with pytest.raises(ConfigError, match=message):
        _checked_parameters(NOTEBOOK, [pair])


def test_a_path_that_is_not_a_notebook_is_one_line(tmp_path, capsys):
    from nbkit.cli import main

    assert main(["notebook", str(tmp_path / "missing.ipynb")]) == 2
    err = capsys.readouterr().err
    assert "is not a notebook file: pass the path of an .ipynb" in err and "Traceback" not in err
