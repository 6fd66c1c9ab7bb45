"""The Binder environment and the package metadata must not drift apart."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def names(reqs):
    return {re.split(r"[<>=!\[ ]", r, maxsplit=1)[0].lower() for r in reqs}


def test_binder_installs_every_base_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    have = names(pip) | {"torch" if n.startswith("pytorch") else n for n in names(conda)}
    assert names(project["dependencies"]) <= have
    assert "unsloth" not in have  # needs a GPU; Binder has none


def test_unsloth_only_in_the_gpu_extra_with_compatible_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "unsloth" not in names(project["dependencies"])
    assert "unsloth==2026.10.9" in project["optional-dependencies"]["gpu"]
    pins = {re.split(r"[<>=]", d, maxsplit=1)[0]: d for d in project["dependencies"]}
    assert pins["transformers"].endswith("<=5.17") and pins["trl"].endswith("<=1.15")
    assert pins["datasets"].endswith("<5") and pins["torch"].endswith("<2.15")
