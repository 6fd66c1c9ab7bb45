"""The package's shape: the core never imports the UI, and no module imports its way back to itself.

Imports are read from the source (module level and inside functions alike), so a function-level import
cannot hide a dependency or a cycle.
"""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "nbkit"
# what sits on top of the core and may import anything in it
FRONT = ("nbkit.ui", "nbkit.cli", "nbkit.__main__")


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """nbkit modules `name` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            # `from . import data` names a module; `from .config import RunConfig` names a symbol
            targets = [f"{root}.{a.name}" if f"{root}.{a.name}" in known else root for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a symbol or submodule path: its nearest module
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name and target != "nbkit":
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def is_front(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FRONT)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_core_never_imports_the_ui():
    bad = [f"{src} -> {dst}" for src, dsts in graph().items() if not is_front(src)
           for dst in sorted(dsts) if is_front(dst)]
    assert not bad, f"core modules import the UI/CLI: {bad}"


def test_no_import_cycles():
    edges = graph()
    found = cycles(edges)
    named = [[f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp] for comp in found]
    assert not found, f"import cycles: {named}"


def test_the_checks_see_function_level_imports(tmp_path, monkeypatch):
    """The walker must catch what the old code hid inside functions: a cycle and a core->ui edge."""
    pkg = tmp_path / "nbkit"
    (pkg / "ui").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ui" / "__init__.py").write_text("")
    (pkg / "ui" / "progress.py").write_text("X = 1\n")
    (pkg / "models.py").write_text("def f():\n    from .distributed import g\n")
    (pkg / "distributed.py").write_text("def g():\n    from .workflow import run\n")
    (pkg / "workflow.py").write_text("from . import models\n\ndef run():\n    from .ui.progress import X\n")
    monkeypatch.setitem(globals(), "PKG", pkg)
    edges = graph()
    assert cycles(edges) == [["nbkit.distributed", "nbkit.models", "nbkit.workflow"]]
    with pytest.raises(AssertionError, match="nbkit.workflow -> nbkit.ui.progress"):
        test_the_core_never_imports_the_ui()
