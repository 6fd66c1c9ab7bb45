"""The package's shape: the stages are layers (each imports only the floors below it, so the core never imports
the UI), no module imports its way back to itself, and every module has one name, its path.

Imports are read from the source (module level and inside functions alike), so a function-level import
cannot hide a dependency, a cycle or an import back up the floors.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "nbkit"
# what sits on top of the core and may import anything in it
FRONT = ("nbkit.ui", "nbkit.cli", "nbkit.cli_notebook", "nbkit.__main__")
# The floors, lowest first (docs/architecture.md): a module may import its own floor and those below, never one
# above. A module is on the floor of the longest prefix naming it. `backend` (the libraries, imported in the order
# Unsloth needs) and `hub` (the Hugging Face Hub, its errors told apart) sit in loading/ but serve every floor
# from specs up: they are the base's.
FLOORS = (
    # planning.allocator is pure state (which allocator the run has) that loading.backend records when it sets it
    ("base", ("nbkit.errors", "nbkit.resources", "nbkit.loading.backend", "nbkit.loading.hub",
              "nbkit.planning.allocator")),
    ("specs", ("nbkit.specs",)),
    ("planning", ("nbkit.planning",)),
    ("gpus", ("nbkit.gpus",)),
    ("loading", ("nbkit.loading",)),
    ("training", ("nbkit.training",)),
    ("exporting", ("nbkit.exporting",)),
    ("workflow", ("nbkit.workflow",)),
    # a run's thread, its stop control and its outcome, for every view alike (the work it runs is the workflow's)
    ("runner", ("nbkit.runner",)),
    ("session", ("nbkit.session",)),
    ("views", ("nbkit.ui", "nbkit.cli", "nbkit.cli_notebook", "nbkit.__main__")),
    ("api", ("nbkit",)),  # nbkit/__init__.py: the public API names what it likes
)


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


def floor(name: str) -> int | None:
    """The index in FLOORS of the floor `name` is on (its longest matching prefix); None when none names it."""
    found = [(len(prefix), i) for i, (_, prefixes) in enumerate(FLOORS) for prefix in prefixes
             if name == prefix or name.startswith(prefix + ".")]
    return max(found)[1] if found else None


def test_the_core_never_imports_the_ui():
    bad = [f"{src} -> {dst}" for src, dsts in graph().items() if not is_front(src) and src != "nbkit"
           for dst in sorted(dsts) if is_front(dst)]  # nbkit itself is the public API: it names nbkit.ui
    assert not bad, f"core modules import the UI/CLI: {bad}"


def test_no_import_cycles():
    edges = graph()
    found = cycles(edges)
    named = [[f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp] for comp in found]
    assert not found, f"import cycles: {named}"


def test_every_module_is_on_a_floor():
    assert not [name for name in modules() if floor(name) is None], "place new folders in FLOORS"


def test_no_import_runs_back_up_the_floors():
    """specs → planning → gpus → loading → training → exporting → workflow → session → ui / cli."""
    bad = [f"{src} ({FLOORS[floor(src)][0]}) -> {dst} ({FLOORS[floor(dst)][0]})"
           for src, dsts in sorted(graph().items()) for dst in sorted(dsts) if floor(dst) > floor(src)]
    assert not bad, f"imports that run back up the floors: {bad}"


def test_the_checks_see_function_level_imports(tmp_path, monkeypatch):
    """The walker must catch what the old code hid inside functions: a cycle, an import back up the floors and a
    core->ui edge."""
    pkg = tmp_path / "nbkit"
    for folder in ("ui", "loading", "gpus"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "ui" / "progress.py").write_text("X = 1\n")
    (pkg / "loading" / "models.py").write_text("def f():\n    from ..gpus.distributed import g\n")
    (pkg / "gpus" / "distributed.py").write_text("def g():\n    from ..workflow import run\n")
    (pkg / "workflow.py").write_text("from .loading import models\n\ndef run():\n    from .ui.progress import X\n")
    monkeypatch.setitem(globals(), "PKG", pkg)
    edges = graph()
    assert cycles(edges) == [["nbkit.gpus.distributed", "nbkit.loading.models", "nbkit.workflow"]]
    with pytest.raises(AssertionError, match="nbkit.workflow -> nbkit.ui.progress"):
        test_the_core_never_imports_the_ui()
    with pytest.raises(AssertionError) as back_up:
        test_no_import_runs_back_up_the_floors()
    assert "nbkit.gpus.distributed (gpus) -> nbkit.workflow (workflow)" in str(back_up.value)
    assert "nbkit.workflow (workflow) -> nbkit.ui.progress (views)" in str(back_up.value)
    assert "nbkit.loading.models" not in str(back_up.value)  # loading may use gpus: it is the floor below


def defined_names(path: Path) -> set[str]:
    """Names a module defines at its top level, read from its source (imports under `if TYPE_CHECKING:` too)."""
    names, todo = set(), list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Assign):
            names |= {n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.If, ast.Try)):
            todo += node.body + node.orelse + [n for h in getattr(node, "handlers", []) for n in h.body]
    return names


def module_path(name: str) -> Path | None:
    """The file of module `name` (a .py file, or a folder's __init__.py), found by its path alone."""
    base = PKG.parent.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def resolves_statically(dotted: str) -> bool:
    """`nbkit.a.b.name...`: the longest prefix that is a module by path, then a name that module defines (or a
    module below it); what follows a defined name is an attribute of it, not checked here."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        if module_path(".".join(parts[:i])) is not None:
            break
    else:
        return False
    return i == len(parts) or parts[i] in defined_names(module_path(".".join(parts[:i])))


def test_the_public_api_resolves_by_path_and_at_run_time():
    """What nbkit/__init__.py names: each name is defined where the table says (read from the source, as an
    editor or a type checker would), named again under TYPE_CHECKING, and imports at run time."""
    init = PKG / "__init__.py"
    table = ast.literal_eval(next(node.value for node in ast.parse(init.read_text()).body
                                  if isinstance(node, ast.AnnAssign) and node.target.id == "_PUBLIC"))
    assert {"RunConfig", "check_gpu", "fill_in", "workflow"} <= set(table)
    for name, where in table.items():
        assert resolves_statically(f"nbkit.{name}" if where is None else f"{where}.{name}"), name
    assert set(table) <= defined_names(init), "name each one under TYPE_CHECKING too"
    code = ("import nbkit, sys\nassert 'nbkit.training.train' not in sys.modules  # import nbkit stays light\n"
            f"for name in {sorted(table)!r}:\n    getattr(nbkit, name)\n"
            f"from nbkit import {', '.join(sorted(table))}\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_every_module_has_one_name():
    """No module answers to a second name: the short names the stages' modules once had (nbkit.<module>) import
    nothing, every module's spec is its own (so importlib.reload works), and imports inside functions raise no
    "__package__ != __spec__.parent" warning."""
    staged = sorted({name.rsplit(".", 1)[1] for name in modules() if name.count(".") == 2})
    names = sorted(name for name in modules() if not name.endswith("__main__"))
    code = f"""import importlib, importlib.util, warnings
warnings.simplefilter("error")
import nbkit
for short in {staged!r}:
    assert importlib.util.find_spec("nbkit." + short) is None, short
    assert not hasattr(nbkit, short), short
for name in {names!r}:
    module = importlib.import_module(name)
    assert module.__spec__.name == name and module.__package__ == module.__spec__.parent, name
    assert importlib.reload(module) is module and module.__spec__.name == name, name
from nbkit.planning import recommend, hardware
try:  # runs imports inside a function (`from ..specs import spec_for`)
    recommend.fill_in(nbkit.RunConfig(), hardware.GpuInfo(available=False))
except nbkit.NbkitError:
    pass
print("ONE NAME")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ONE NAME" in proc.stdout, proc.stderr[-3000:]
