"""Errors nbkit raises for bad input. Each message says what was wrong and what to do instead."""


class NbkitError(Exception):
    """Base class: catch this to handle any nbkit input problem."""


class ConfigError(NbkitError, ValueError):
    """A RunConfig value is invalid."""


class HardwareError(NbkitError, RuntimeError):
    """The machine cannot run what was asked (no GPU for FP8, GPU too old, tier too small)."""


class ModelNotFoundError(NbkitError, LookupError):
    """A model id is neither a local folder, an embedded model nor reachable on the Hub."""


class DataError(NbkitError, ValueError):
    """A data set cannot be read or has no columns nbkit knows how to format."""


class ExportError(NbkitError, RuntimeError):
    """A save format is not available here."""


class TrainingDivergedError(NbkitError, RuntimeError):
    """The loss or gradient stopped being finite; nothing non-finite was saved. `.step`, `.checkpoint`."""
