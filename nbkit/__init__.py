"""nbkit: fine-tune LLMs with Unsloth (QLoRA, 16-bit LoRA, FP8 LoRA) on the GPU you have.

Heavy libraries are imported inside functions, so `import nbkit` is instant and leaves the
Unsloth-before-transformers import order to nbkit.backend.
"""
from .backend import quiet_libraries
from .config import RunConfig
from .errors import ConfigError, DataError, ExportError, HardwareError, ModelNotFoundError, NbkitError

__version__ = "0.1.0"
quiet_libraries()  # log levels of two libraries' loggers only: the environment is left as it was


def __getattr__(name: str):
    """`nbkit.workflow`, `nbkit.export`, … after a plain `import nbkit`: each stage is imported when first used, so
    the import itself stays instant."""
    import importlib.util

    if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
        raise AttributeError(f"module 'nbkit' has no attribute {name!r}")
    return importlib.import_module(f".{name}", __name__)


__all__ = ["RunConfig", "NbkitError", "ConfigError", "DataError", "ExportError", "HardwareError",
           "ModelNotFoundError", "__version__"]
