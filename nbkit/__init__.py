"""nbkit: fine-tune LLMs with Unsloth (QLoRA, 16-bit LoRA, FP8 LoRA) on the GPU you have.

Heavy libraries are imported inside functions, so `import nbkit` is instant and leaves the
Unsloth-before-transformers import order to nbkit.backend.
"""
from .backend import configure_allocator, quiet_libraries
from .config import RunConfig
from .errors import ConfigError, DataError, ExportError, HardwareError, ModelNotFoundError, NbkitError

__version__ = "0.1.0"
quiet_libraries()
configure_allocator()
__all__ = ["RunConfig", "NbkitError", "ConfigError", "DataError", "ExportError", "HardwareError",
           "ModelNotFoundError", "__version__"]
