"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""

from __future__ import annotations


class CnnkitError(Exception):
    """Bad input: the message says what is wrong and what to do about it."""


class ConfigError(CnnkitError):
    """An unknown key, a wrong type or a bad value in a config."""


class DataError(CnnkitError):
    """A dataset that cannot be found, downloaded or read."""


class RunError(CnnkitError):
    """A run folder that is missing, incomplete or not a cnnkit run."""


class ImageError(CnnkitError):
    """An image file that cannot be decoded."""


class TrainingDiverged(CnnkitError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after saving a checkpoint; the message says how to resume."""


class RunStopped(Exception):
    """Raised by a training callback at an epoch's end (after cnnkit's checkpoint of that epoch is
    committed) to end the run there without an error: run.json records ``status`` and ``details``
    (for example a tuning trial that the pruner stopped). The run resumes like an interrupted one."""

    def __init__(self, message: str, status: str, details: dict[str, object]) -> None:
        super().__init__(message)
        self.status = status
        self.details = details
