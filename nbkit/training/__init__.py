"""nbkit, training: a run under observation: its folder and states, checkpoints, events, failures."""
import importlib as _importlib
import importlib.util as _importlib_util


def __getattr__(name: str):
    """A module of this folder by its path after a plain `import nbkit` (nbkit.<stage>.<module>), imported when
    first used."""
    if name.startswith("_") or _importlib_util.find_spec(f"{__name__}.{name}") is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _importlib.import_module(f"{__name__}.{name}")
