"""The faults a stage reports as one line (``<stage>: error: <message>``), in a module with no
heavy imports: stages that need no torch (prepare, evaluate) import these without loading it.

Each error's message names the file or parameter at fault and what is wrong with it.
"""
from __future__ import annotations


class ParamsError(ValueError):
    """A parameter is unknown, missing, of the wrong type or out of range."""


class DataError(ValueError):
    """The data set is missing a file or holds a bad one; the message names it."""


class ArtifactError(RuntimeError):
    """An artifact is missing, unreadable or not what it should be."""


class BackboneError(ValueError):
    """Unknown backbone name or weights that do not fit it."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss is NaN or infinite)."""


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be resumed (another run's, or unreadable)."""


#: Every fault :func:`wsss.cli.run_stage` turns into one line and exit status 2.
KNOWN_FAULTS = (ParamsError, DataError, ArtifactError, BackboneError, TrainingError, CheckpointError)
