"""nbkit: fine-tune LLMs with Unsloth (QLoRA, 16-bit LoRA, FP8 LoRA) on the GPU you have.

The modules sit in folders by stage: planning/ (settings, the GPU, memory), loading/ (model and data), training/
(a run under observation), exporting/ (checks and exports), gpus/ (several GPUs), ui/ (views); at the top the
orchestration (workflow, session), the command line, the errors, and the data nbkit ships (specs/, resources/).
Each module keeps its short name too: `nbkit.train` is `nbkit.training.train`, the same module object (_Stages
below), so code written against the flat layout works.

Heavy libraries are imported inside functions, so `import nbkit` is instant and leaves the
Unsloth-before-transformers import order to nbkit.backend.
"""
import importlib
import importlib.abc
import importlib.util
import sys

STAGES = {
    "planning": ("config", "config_files", "hardware", "cards", "memory", "sharding", "recommend", "fp8"),
    "loading": ("backend", "hub", "models", "gpu_session", "tiny", "data", "data_files", "packing", "data_rows",
                "data_text", "bnb_cpu"),
    "training": ("outputs", "checkpoints", "runs", "train", "trainer_bridge", "events", "results", "train_failures",
                 "probe", "warmup"),
    "exporting": ("verify", "generate", "export", "gguf"),
    "gpus": ("distributed", "parallel", "fsdp"),
}
_SHORT = {f"{__name__}.{m}": f"{__name__}.{stage}.{m}" for stage, mods in STAGES.items() for m in mods}


class _Stages(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `nbkit.<module>` as the module in its stage folder: the very same object, under both names."""

    @staticmethod
    def staged(fullname: str) -> str | None:
        """`nbkit.<module>` (or a name below it) as named in its stage folder; None for a name not staged."""
        short = next((s for s in _SHORT if fullname == s or fullname.startswith(s + ".")), None)
        return None if short is None else _SHORT[short] + fullname[len(short):]

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if self.staged(fullname) else None

    def create_module(self, spec):
        return importlib.import_module(self.staged(spec.name))

    def exec_module(self, module):
        pass  # already executed under its own name


if not any(isinstance(finder, _Stages) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Stages())

from .loading.backend import quiet_libraries  # noqa: E402
from .planning.config import RunConfig  # noqa: E402
from .errors import ConfigError, DataError, ExportError, HardwareError, ModelNotFoundError, NbkitError  # noqa: E402

__version__ = "0.1.0"
quiet_libraries()  # log levels of two libraries' loggers only: the environment is left as it was


def __getattr__(name: str):
    """`nbkit.workflow`, `nbkit.export`, … after a plain `import nbkit`: each stage is imported when first used, so
    the import itself stays instant."""
    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
        raise AttributeError(f"module 'nbkit' has no attribute {name!r}")
    return importlib.import_module(f".{name}", __name__)


__all__ = ["RunConfig", "NbkitError", "ConfigError", "DataError", "ExportError", "HardwareError",
           "ModelNotFoundError", "__version__"]
