"""Errors a user fixes by changing a file or a parameter: stages print them as one line, without a
traceback. Any other exception is a bug and keeps its traceback. (params.ParamsError is the same
kind; params.py imports nothing of etude, so it stands on its own.)"""


class EtudeError(Exception):
    """The message names the file or parameter and what is wrong."""


class DataError(EtudeError, ValueError):
    """The data cannot serve a stage or a variant: the message names the split and the setting to
    change."""


class TrainingError(EtudeError, RuntimeError):
    """A training cannot start or go on: a checkpoint that does not fit, a loss diverged at once."""


class StageError(EtudeError, RuntimeError):
    """A stage cannot do its work."""
