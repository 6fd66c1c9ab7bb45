"""nbkit: fine-tune LLMs with Unsloth (QLoRA, 16-bit LoRA, FP8 LoRA) on the GPU you have.

Every module has one name, its path: the stages are folders, each using only the ones below it (docs/architecture.md):
specs/ (what a model holds), planning/ (settings, the GPU, memory), loading/ (model and data), training/ (a run
under observation), exporting/ (checks and exports), gpus/ (several GPUs); on top the orchestration (workflow,
session) and the views (ui/, cli).

The public API is the table below: `from nbkit import RunConfig, check_gpu, workflow` or `nbkit.workflow.run(...)`
after a plain `import nbkit`. Each name is imported when first used (heavy libraries are imported inside functions
too), so `import nbkit` is instant and leaves the Unsloth-before-transformers import order to
nbkit.loading.backend.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .loading.backend import quiet_libraries

__version__ = "0.1.0"
quiet_libraries()  # log levels of two libraries' loggers only: the environment is left as it was

# name -> the module that defines it (a name that is a module maps to None: imported as nbkit.<name>)
_PUBLIC: dict[str, str | None] = {
    # settings, the GPU, what fits
    "RunConfig": "nbkit.planning.config",
    "check_gpu": "nbkit.planning.hardware",
    "GpuInfo": "nbkit.planning.hardware",
    "planned_gpu": "nbkit.planning.cards",
    "emulate": "nbkit.planning.cards",
    "fill_in": "nbkit.planning.recommend",
    "estimate": "nbkit.planning.memory",
    "spec_for": "nbkit.specs",
    # errors a caller catches
    "NbkitError": "nbkit.errors",
    "ConfigError": "nbkit.errors",
    "DataError": "nbkit.errors",
    "ExportError": "nbkit.errors",
    "HardwareError": "nbkit.errors",
    "ModelNotFoundError": "nbkit.errors",
    "UnfinishedRunError": "nbkit.errors",
    "TrainingDivergedError": "nbkit.errors",
    "RunFinished": "nbkit.errors",
    "TrainingInterrupted": "nbkit.errors",
    "AfterTrainingError": "nbkit.errors",  # trained and saved; a stage after the last step failed
    # modules: the whole run in one call, a notebook session, the views; and the stage folders
    "workflow": None,
    "session": None,
    "errors": None,
    "ui": None,
    "specs": None,
    "planning": None,
    "loading": None,
    "training": None,
    "exporting": None,
    "gpus": None,
}

if TYPE_CHECKING:  # the same names, for editors and type checkers
    from . import errors, exporting, gpus, loading, planning, session, specs, training, ui, workflow
    from .errors import (AfterTrainingError, ConfigError, DataError, ExportError, HardwareError, ModelNotFoundError,
                         NbkitError, RunFinished, TrainingDivergedError, TrainingInterrupted, UnfinishedRunError)
    from .planning.cards import emulate, planned_gpu
    from .planning.config import RunConfig
    from .planning.hardware import GpuInfo, check_gpu
    from .planning.memory import estimate
    from .planning.recommend import fill_in
    from .specs import spec_for


def __getattr__(name: str):
    """A public name, imported when first used (and kept: the next lookup is a plain attribute)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'nbkit' has no attribute {name!r}")
    where = _PUBLIC[name]
    value = importlib.import_module(f"{__name__}.{name}") if where is None else getattr(
        importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = [name for name, where in _PUBLIC.items() if where is not None] + ["__version__"]
