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
