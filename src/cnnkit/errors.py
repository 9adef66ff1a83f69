"""Errors a user can fix. The CLI prints them as one line and exits with status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """The end of an error message for an unknown ``word``: the closest of ``choices``
    (``"; did you mean 'train.epochs'?"``), or the whole list when none is close."""
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    if not close:
        # Fall back to the key with the same last part ("epochs" -> "train.epochs").
        tail = word.rsplit(".", 1)[-1]
        close = [c for c in choices if c.rsplit(".", 1)[-1] == tail][:1]
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid: {', '.join(sorted(choices))}"
