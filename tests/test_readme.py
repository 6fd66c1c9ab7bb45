"""Every code block in README.md runs as written, in the situation the README describes for it.

Each block is preceded by `<!-- readme-test: CONTEXT -->`, which names that situation: the repository itself (the
main job), a new kernel (the Python example) and the kernel after it, a folder holding a finished run, an
interrupted run, or just a run.yaml. Python blocks run in a real Jupyter kernel, shell blocks in bash.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.kernel import Kernel

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
TAGGED = re.compile(r"<!-- readme-test: ([a-z-]+)[^>]*-->\n```(\w+)\n(.*?)```", re.S)
BLOCKS = [(m.group(1), m.group(2), m.group(3)) for m in TAGGED.finditer(README)]
RUN_YAML = ('from nbkit import RunConfig\nRunConfig(quantization="16bit", max_seq_length=64, batch_size=2, '
            'grad_accum=1, max_steps=4, lora_r=4, save_steps=2, max_samples=16, output_dir="run").save("run.yaml")')
# an interrupt at step 2, through the same path the kernel's Interrupt takes (a stop request marked SIGINT)
INTERRUPTED = RUN_YAML + '''
from nbkit.loading import data, models
from nbkit.training import train
from nbkit.errors import TrainingInterrupted
from nbkit.training.events import RunObserver, StopControl
stop = StopControl()
class At2(RunObserver):
    def step_finished(self, info):
        if info.step == 2:
            stop.request("interrupted", "SIGINT")
config = RunConfig.load("run.yaml")
loaded = models.load(config)
try:
    train.run(loaded, data.prepare(config, loaded.tokenizer), [At2()], stop=stop)
except TrainingInterrupted as exc:
    print(exc)
'''


def env() -> dict:
    return {**os.environ, "NBKIT_DISPLAY": "text", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


def bash(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env(), capture_output=True,
                          text=True, timeout=600)


def python(code: str, cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_every_code_block_says_how_it_is_run():
    assert len(re.findall(r"^```\w+\n", README, re.M)) == len(BLOCKS) >= 8
    assert {context for context, *_ in BLOCKS} <= {"main-job", "ci", "example", "after-example", "finished-run",
                                                   "interrupted-run", "run-yaml"}


def test_the_ci_block_is_what_ci_runs():
    (ci,) = [code for context, _, code in BLOCKS if context == "ci"]
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == ci.strip()


@pytest.mark.slow
def test_every_readme_block_runs_as_written(tmp_path, tiny_dir):
    kernels: list[Kernel] = []
    example = None  # the kernel of the Python example, which the blocks after it continue
    try:
        for i, (context, lang, code) in enumerate(BLOCKS):
            where = tmp_path / f"block{i}-{context}"
            where.mkdir()
            if context == "ci":
                continue  # CI runs it: test_the_ci_block_is_what_ci_runs
            if context == "main-job":
                where = ROOT
            elif context in ("example", "after-example"):
                where = tmp_path / "example"
                where.mkdir(exist_ok=True)
            elif context == "run-yaml":
                python(RUN_YAML, where)
            elif context == "finished-run":
                python(RUN_YAML, where)
                assert bash("nbkit train --config run.yaml", where).returncode == 0
            elif context == "interrupted-run":
                python(INTERRUPTED, where)
                assert '"status": "interrupted"' in (where / "run" / "nbkit_run.json").read_text()
            if lang == "bash":
                proc = bash(code, where)
                assert proc.returncode == 0, f"README block {i} ({context}) failed:\n{proc.stderr[-3000:]}"
                continue
            if context == "example":
                example = kernel = Kernel(where)
            elif context == "after-example":
                kernel = example
            else:  # a kernel of its own, where the README's situation holds: `config` is the run's settings
                kernel = Kernel(where)
                assert kernel.run('import nbkit\nconfig = nbkit.RunConfig.load("run.yaml")').error is None
            kernels.append(kernel)
            run = kernel.run(code, timeout=600)
            assert run.error is None, f"README block {i} ({context}) failed: {run.error}\n{run.text[-2000:]}"
    finally:
        for kernel in set(kernels):
            kernel.close()
    assert (ROOT / "out" / "8gb.ipynb").exists()


def readme_names() -> tuple[set[str], list[tuple[str, list[str]]]]:
    """Every `nbkit.x.y` the README names (code and prose), and every `from nbkit... import a, b` in it."""
    from_import = re.compile(r"^\s*from (nbkit[\w.]*) import ([\w, ]+)", re.M)
    froms = [(m.group(1), [n.split(" as ")[0].strip() for n in m.group(2).split(",")])
             for m in from_import.finditer(README)]
    # names used after a plain `import nbkit`, in code and prose (a from-import's module is checked as one)
    dotted = set(re.findall(r"(?<![\w./-])nbkit(?:\.[A-Za-z_]\w*)+", from_import.sub("", README)))
    return dotted, froms


def test_every_name_the_readme_uses_resolves_by_path_and_at_run_time():
    """What a reader copies from the README resolves where an editor looks (the module's file by its path, the
    name in that file's source) and in a fresh interpreter after a plain `import nbkit`."""
    from test_architecture import defined_names, module_path, resolves_statically

    dotted, froms = readme_names()
    assert len(dotted) >= 10 and len(froms) >= 3
    assert not [d for d in dotted if not resolves_statically(d)]
    for module, names in froms:
        assert module_path(module) is not None, module
        assert not [n for n in names if n not in defined_names(module_path(module))
                    and module_path(f"{module}.{n}") is None], module
    chains = "\n".join(f"_get({d!r})" for d in sorted(dotted))
    imports = "\n".join(f"from {module} import {', '.join(names)}" for module, names in froms)
    code = f"""import functools, nbkit
def _get(dotted):
    return functools.reduce(getattr, dotted.split(".")[1:], nbkit)
{chains}
{imports}
print("RESOLVED")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env())
    assert proc.returncode == 0 and "RESOLVED" in proc.stdout, proc.stderr[-3000:]
