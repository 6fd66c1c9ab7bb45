"""`nbkit notebook NB`: run a notebook headless (papermill), its `-p NAME VALUE` parameters checked first.

The command line's notebook command, apart from the others (nbkit.cli) because checking a parameter against the
notebook's parameters cell (its name, the kind of value it takes) is a responsibility of its own.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def run_notebook(args) -> int:
    """Run a notebook headless (papermill), with text progress instead of widgets. `-p` values are checked
    against the notebook's parameters cell first; a cell that fails is one line (the saved notebook has it all)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from .errors import ConfigError

    os.environ["NBKIT_DISPLAY"] = "text"  # inherited by the kernel: no widget front end is attached
    src = Path(args.notebook)
    if not src.is_file():
        raise ConfigError(f"{src} is not a notebook file: pass the path of an .ipynb, e.g. notebooks/8gb.ipynb.")
    params = _checked_parameters(src, args.param or [])
    out = Path(args.output or Path("out") / src.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(src), str(out), parameters=params, log_output=True, progress_bar=False,
                                   cwd=args.cwd)
    except PapermillExecutionError as exc:
        print(f"nbkit: error: cell {exc.exec_count} stopped the notebook: {exc.ename}: "
              f"{str(exc.evalue).splitlines()[0] if exc.evalue else ''} (the executed notebook, with the "
              f"traceback, is {out})", file=sys.stderr)
        return 130 if exc.ename == "TrainingInterrupted" else 2 if exc.ename in _nbkit_errors() else 1
    print(f"nbkit: executed {src} -> {out}")
    return 0


def _nbkit_errors() -> set[str]:
    """The names of nbkit's errors: the user's to fix (what the notebook set), reported as such (exit 2)."""
    from . import errors

    return {c.__name__ for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.NbkitError)}


def _checked_parameters(notebook: Path, pairs) -> dict:
    """`-p NAME VALUE` pairs as the notebook's parameters cell types them; an unknown name or a value of the
    wrong kind is a ConfigError naming the parameter and what it takes."""
    import difflib

    import papermill

    from .errors import ConfigError

    declared = papermill.inspect_notebook(str(notebook))
    params = {}
    for name, text in pairs:
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{notebook.name} has no parameter {name!r}{hint}; its parameters are "
                              f"{', '.join(declared)}.")
        value, kind = _literal(text), _kind(declared[name])
        if not _of_kind(value, kind):
            raise ConfigError(f"-p {name} {text}: {name} takes {_KIND_WORDS.get(kind, kind)} (default "
                              f"{declared[name].get('default')}), not {text!r}.")
        params[name] = value
    return params


_KIND_WORDS = {"int": "a whole number", "float": "a number", "bool": "True or False", "str": "text",
               "auto": '"auto", True or False'}


def _kind(param: dict) -> str:
    """A parameter's type: its annotation, else its default's; a default of "auto" also takes True/False."""
    declared = param.get("inferred_type_name") or "None"
    if declared != "None":
        return declared
    default = _literal(param.get("default", "None"))
    return "auto" if default == "auto" else type(default).__name__


def _of_kind(value, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "auto":
        return isinstance(value, (str, bool))
    return True  # None or a type papermill could not infer: anything goes


def _literal(text: str):
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
