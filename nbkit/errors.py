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


class UnfinishedRunError(ExportError):
    """An export or chat of a model whose run stopped or was interrupted, without allow_unfinished=True."""


class TrainingDivergedError(NbkitError, RuntimeError):
    """The loss or gradient stopped being finite; nothing non-finite was saved. `.step`, `.checkpoint`."""


class RunFinished(NbkitError):
    """Resume was asked of a run that already finished: nothing was changed (the CLI exits 0)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training was interrupted (the kernel's Interrupt, Ctrl-C, SIGTERM): a checkpoint was saved at the step
    boundary and the run folder says "interrupted at step k/N". A KeyboardInterrupt, so Run All stops here.
    `.result` (the TrainResult so far), `.loaded` (the model, usable), `.checkpoint`, `.signal`."""

    def __init__(self, message: str, result=None, loaded=None, checkpoint=None, signal_name: str = "SIGINT"):
        super().__init__(message)
        self.result, self.loaded, self.checkpoint, self.signal = result, loaded, checkpoint, signal_name


class AfterTrainingError(NbkitError, RuntimeError):
    """Training ended and the adapters are saved, but a stage after it failed (the verification, the after-sample):
    the run folder says what is missing and the message gives the command that finishes it. `.loaded` (the trained
    model, usable), `.result` (the TrainResult), `.adapter_dir`, `.report` (the WorkflowReport so far, or None)."""
