"""Hyperparameter search over the config with Optuna: ``cnnkit tune``.

A study searches a *space* (a YAML file over config keys) around a base config. Every trial is
an ordinary run folder, ``DIR/<study>/trial-<n>``, trained by :func:`cnnkit.train`, so evaluate,
report, compare and predict work on it. Its objective is ``train.monitor`` on the validation
split (never the test set) of the weights the run keeps.

- :mod:`cnnkit.tuning.space`: the search space, checked against the config schema;
- :mod:`cnnkit.tuning.study`: the study's storage, workers, and the verbs :func:`tune` and
  :func:`describe_study`;
- :mod:`cnnkit.tuning.trial`: one trial as a run, its pruning and its retries;
- :mod:`cnnkit.tuning.results`: the trials as rows, best.yaml and the study page.
"""

from __future__ import annotations

from cnnkit.tuning.results import StudyResult, TrialSummary
from cnnkit.tuning.space import Param, parse_space, read_space
from cnnkit.tuning.study import DEFAULT_PRUNER, PRUNERS, describe_study, tune

__all__ = [
    "DEFAULT_PRUNER",
    "PRUNERS",
    "Param",
    "StudyResult",
    "TrialSummary",
    "describe_study",
    "parse_space",
    "read_space",
    "tune",
]
