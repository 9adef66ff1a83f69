"""Hyperparameter search over the config with Optuna: ``cnnkit tune``.

A study searches a *space* (a YAML file over config keys) around a base config. Every trial is
an ordinary run folder, ``DIR/<study>/trial-<n>``, trained by :func:`cnnkit.train`, so evaluate,
report, compare and predict work on it. Its objective is ``train.monitor`` on the validation
split (never the test set) of the weights the run keeps; it reports that value after every
epoch, and the pruner may stop it there (its run.json then says ``status: pruned``).

The study lives in an Optuna storage: a SQLite file in the study folder by default, so several
``cnnkit tune`` processes on one machine share it, or a server (``postgresql://...``) for
workers on several machines. Running the same command again continues the study. Each worker
beats a heartbeat; a worker that dies mid-trial is noticed by the others (or by the next one to
start), and its trial is queued again and continues the dead trial's run folder from its last
checkpoint (``cnnkit train --resume``), when that folder is reachable from the worker.

The study folder also gets ``best.yaml`` (the best trial's settings, which ``cnnkit train
--config`` takes) and ``study.html`` (optimisation history, parameter importances, the best
trials side by side), rewritten when a worker finishes and by ``cnnkit tune show``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import socket
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.config import RUN_NAME, Config, did_you_mean, flatten, key_type, read_yaml
from cnnkit.errors import CnnkitError, ConfigError, RunStopped, TrainingDiverged
from cnnkit.runs import CONFIG_FILE, LOCK_FILE, RUN_FILE, Run

log = logging.getLogger(__name__)

PRUNERS = ("median", "halving", "none")
STORAGE_FILE = "study.db"
BEST_FILE = "best.yaml"
PAGE_FILE = "study.html"
# Keys a space may not vary: they change what trials are compared on (the validation images,
# the metric, the cost each trial gets) or name things.
FIXED = ("name", "seed", "data.name", "data.path", "data.val_split", "data.test_split",
         "data.test_subset", "train.monitor", "train.budget", "train.keep", "report.")  # fmt: skip
SPEC_FIELDS = ("low", "high", "log", "step", "choices")
# MedianPruner: no pruning until this many trials are complete (Optuna's default is 5).
MEDIAN_STARTUP_TRIALS = 4
# A worker stops after this many failed trials in a row (a broken setting, not bad luck).
MAX_FAILURES_IN_A_ROW = 3


# ----------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class Param:
    """One dimension of a search space: a float or int range (optionally on a log scale or in
    steps), or a list of choices."""

    key: str
    kind: str  # "float", "int" or "categorical"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def distribution(self) -> Any:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "categorical":
            return CategoricalDistribution(self.choices)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log,
                                   step=int(self.step or 1))  # fmt: skip
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "int" and int(value) != value:
            return False
        if self.step and not math.isclose((value - self.low) / self.step,
                                          round((value - self.low) / self.step)):  # fmt: skip
            return False
        return bool(self.low <= value <= self.high)

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"one of {', '.join(map(str, self.choices))}"
        scale = ", log scale" if self.log else f", step {self.step:g}" if self.step else ""
        return f"{self.kind} in [{self.low:g}, {self.high:g}]{scale}"


def read_space(path: str | Path, base: Config) -> tuple[Param, ...]:
    """The search space in a YAML file, checked against ``base`` (see :func:`parse_space`)."""
    path = Path(path)
    values = read_yaml(path, "space file")
    return parse_space(values, base, str(path))


def parse_space(
    values: Mapping[str, Any], base: Config, source: str = "space"
) -> tuple[Param, ...]:
    """A search space from its YAML form, every key and value checked against the config
    schema and ``base``: a ConfigError (``source: ...``, one line) for an unknown key (with the
    closest valid one), a range on a key that is not a number, a range or a choice that a config
    cannot hold, an empty range, or no parameter at all.

    Forms (keys dotted, or nested as in a config file)::

        train.learning_rate: {low: 1e-4, high: 1e-2, log: true}   # float, log scale
        train.batch_size: {low: 32, high: 256, step: 32}          # int (the key holds ints)
        train.optimizer: [adam, adamw, sgd]                       # choices
        model.params.dropout: {low: 0.0, high: 0.5}
    """
    flat = _flatten_space(values)
    if not flat:
        raise ConfigError(
            f"{source}: no parameter to search; give at least one, for example "
            f"'train.learning_rate: {{low: 1e-4, high: 1e-2, log: true}}'"
        )
    params = []
    for key, spec in flat.items():
        try:
            params.append(_parse_param(key, spec, base))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return tuple(params)


def _flatten_space(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        is_section = (
            isinstance(value, Mapping)
            and value
            and not set(map(str, value)) & set(SPEC_FIELDS)
            and not dotted.startswith("model.params.")
        )
        if is_section:
            flat.update(_flatten_space(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _parse_param(key: str, spec: Any, base: Config) -> Param:
    hint = key_type(key)  # an unknown key: the same "did you mean" as everywhere
    if key.startswith(FIXED):
        raise ConfigError(
            f"{key} cannot be searched: it changes what the trials are compared on "
            f"(set it with --config or key=value instead)"
        )
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"{key}: expected a range {{low: ..., high: ...}} or a list of choices, got {spec!r} "
            f"(a fixed value goes on the command line: {key}={spec})"
        )
    unknown = [str(f) for f in spec if f not in SPEC_FIELDS]
    if unknown:
        raise ConfigError(
            f"{key}: unknown field {unknown[0]!r}{did_you_mean(unknown[0], SPEC_FIELDS)}"
        )
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise ConfigError(f"{key}: give either choices or low/high, not both")
        return _choices(key, spec["choices"], base)
    return _range(key, spec, hint, base)


def _choices(key: str, choices: Any, base: Config) -> Param:
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{key}: choices must be a non-empty list")
    for choice in choices:
        if choice is not None and not isinstance(choice, bool | int | float | str):
            raise ConfigError(f"{key}: choice {choice!r} is not a number, string or true/false")
    values = [_check_value(key, choice, base) for choice in choices]
    if len({(type(v), v) for v in values}) != len(values):
        raise ConfigError(f"{key}: a choice is given twice")
    return Param(key, "categorical", choices=tuple(values))


def _range(key: str, spec: Mapping[str, Any], hint: type | None, base: Config) -> Param:
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{key}: a range needs both low and high")
    numbers: dict[str, float] = {}
    for name in ("low", "high", "step"):
        if name in spec:
            number = _number(spec[name])
            if number is None:
                raise ConfigError(f"{key}: {name} must be a number, got {spec[name]!r}")
            numbers[name] = number
    low, high, step = numbers["low"], numbers["high"], numbers.get("step")
    if hint not in (int, float, None):
        kind = "true or false" if hint is bool else "a string"
        raise ConfigError(
            f"{key} holds {kind}, not a number: give a list of choices instead of a range"
        )
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"{key}: low and high must be finite numbers")
    integer = hint is int or (hint is None and all(
        float(v).is_integer() and not isinstance(v, float) for v in (spec["low"], spec["high"])
    ))  # fmt: skip
    if hint is int and not (low.is_integer() and high.is_integer()):
        raise ConfigError(
            f"{key} holds whole numbers: low and high must be whole, got {low:g}, {high:g}"
        )
    if low >= high:
        raise ConfigError(
            f"{key}: the range [{low:g}, {high:g}] is empty (low must be below high; "
            f"a fixed value goes on the command line: {key}={low:g})"
        )
    use_log = spec.get("log", False)
    if not isinstance(use_log, bool):
        raise ConfigError(f"{key}: log must be true or false, got {use_log!r}")
    if use_log and low <= 0:
        raise ConfigError(f"{key}: a log-scale range needs low > 0, got {low:g}")
    if step is not None:
        if use_log:
            raise ConfigError(f"{key}: give either log: true or a step, not both")
        if not step > 0 or (integer and not float(step).is_integer()):
            raise ConfigError(f"{key}: step must be a positive {'whole ' if integer else ''}number")
    for end in (low, high):
        _check_value(key, int(end) if integer else end, base)
    if integer:
        return Param(key, "int", int(low), int(high), use_log, int(step) if step else None)
    return Param(key, "float", low, high, use_log, step)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)  # YAML 1.1 reads 1e-4 as a string
    except (TypeError, ValueError):
        return None


def _check_value(key: str, value: Any, base: Config) -> Any:
    """``value`` as ``key`` holds it in a config derived from ``base``; a ConfigError if none can."""
    if isinstance(value, str) and key_type(key) in (int, float):
        number = _number(value)
        value = value if number is None else number
    config = base.replace(**{key: value})
    if key.startswith("model.params."):
        from cnnkit.models import check_hparams

        check_hparams(config.model.name, config.model.params)
    return flatten(config.to_dict())[key]


def _suggest(trial: Any, param: Param) -> Any:
    if param.kind == "categorical":
        return trial.suggest_categorical(param.key, list(param.choices))
    if param.kind == "int":
        return trial.suggest_int(param.key, int(param.low), int(param.high),
                                 step=int(param.step or 1), log=param.log)  # fmt: skip
    return trial.suggest_float(param.key, param.low, param.high, step=param.step, log=param.log)


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TrialSummary:
    """One trial as ``cnnkit tune show`` lists it."""

    number: int
    state: str  # complete, pruned, running, waiting, failed
    value: float | None  # the objective (for a pruned trial: its last reported value)
    params: dict[str, Any]
    run: str | None  # its run folder
    seconds: float | None
    epochs: int | None  # epochs it reported
    retry_of: int | None  # the trial whose run folder it continued
    error: str | None = None


@dataclass
class StudyResult:
    """What :func:`tune` and :func:`describe_study` return: every trial, the best one, and the
    files written in the study folder."""

    name: str
    folder: Path
    storage: str  # the storage URL, password hidden
    monitor: str
    direction: str  # maximize or minimize
    trials: list[TrialSummary] = field(default_factory=list)
    best: TrialSummary | None = None
    best_config: Path | None = None
    page: Path | None = None

    def counts(self) -> dict[str, int]:
        return dict(Counter(t.state for t in self.trials))

    def rows(self) -> list[dict[str, Any]]:
        keys = sorted({k for t in self.trials for k in t.params})
        return [
            {
                "trial": t.number,
                "state": t.state,
                self.monitor: t.value,
                "epochs": t.epochs,
                "seconds": None if t.seconds is None else round(t.seconds, 1),
                **{_short(k): t.params.get(k) for k in keys},
            }
            for t in self.trials
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "folder": str(self.folder),
            "storage": self.storage,
            "monitor": self.monitor,
            "direction": self.direction,
            "counts": self.counts(),
            "best": dataclasses.asdict(self.best) if self.best else None,
            "best_config": str(self.best_config) if self.best_config else None,
            "page": str(self.page) if self.page else None,
            "trials": [dataclasses.asdict(t) for t in self.trials],
        }


def _short(key: str) -> str:
    """A parameter's column name: its key without the section (model.params.dropout: dropout)."""
    return key.rsplit(".", 1)[-1] if key.count(".") <= 1 else key.split(".", 2)[-1]


# ----------------------------------------------------------------------------- tune


def tune(
    space: str | Path | Mapping[str, Any],
    config: Config,
    trials: int = 20,
    timeout: float | None = None,
    study: str | None = None,
    storage: str | None = None,
    pruner: str = "median",
    runs_dir: str | Path = "runs",
    heartbeat: int = 60,
    verbose: int | None = 0,
    enqueue: Sequence[Mapping[str, Any]] = (),
) -> StudyResult:
    """Search ``space`` around ``config`` until the study holds ``trials`` finished (complete
    or pruned) trials, or for ``timeout`` seconds; return the study as it then stands.

    Any number of processes may run this on the same study at once: they share it through
    ``storage`` (default: ``sqlite:///RUNS_DIR/STUDY/study.db``; ``postgresql://...`` for
    several machines). ``study`` names the study and its folder ``runs_dir/study`` (default:
    the space file's name). ``pruner``: median (stop a trial whose value after an epoch is
    worse than the median of earlier trials at that epoch), halving (successive halving), none.
    ``heartbeat``: seconds between a worker's signs of life; a trial silent for three of them is
    taken as dead and run again from its last checkpoint. ``verbose``: Keras's display per trial.
    ``enqueue``: settings to try next, before the sampler's (mappings of space keys to values).

    In a new study the first trial is the base config's own settings, where the space holds
    them: the reference that the search has to beat.
    """
    from cnnkit import env

    env.require("optuna", "cnnkit tune", "tune")
    params = (
        read_space(space, config) if not isinstance(space, Mapping) else parse_space(space, config)
    )
    name = study or (Path(space).stem if not isinstance(space, Mapping) else "study")
    _check_arguments(config, name, trials, timeout, pruner, heartbeat)
    folder = Path(runs_dir) / name
    url = storage or f"sqlite:///{(folder / STORAGE_FILE).resolve()}"
    if storage is None:
        _make_folder(folder)
    with _joining(folder if storage is None else None):
        the_study = _open_study(url, name, config, pruner, heartbeat, create=True)
        if storage is not None:
            _make_folder(folder)
        _record_study(the_study, config, params, enqueue)
    objective = _Objective(the_study, config, params, folder, pruner, verbose)
    log.info(
        "study %s (%s, %s): %d trials of %s; trials in %s",
        name, _hide_password(url), the_study.direction.name.lower(), trials,
        "; ".join(f"{p.key} {p.describe()}" for p in params), folder,
    )  # fmt: skip
    _work(the_study, objective, trials, timeout, heartbeat)
    return write_results(summarize(the_study, folder, url, config.train.monitor), the_study)


def describe_study(study: str | Path, storage: str | None = None) -> StudyResult:
    """The study whose folder is ``study`` (``RUNS_DIR/NAME``), read from its SQLite file, or
    from ``storage`` under the folder's name; best.yaml and study.html are rewritten."""
    from cnnkit import env

    env.require("optuna", "cnnkit tune show", "tune")
    folder = Path(study)
    if storage is None and not (folder / STORAGE_FILE).is_file():
        raise CnnkitError(
            f"{folder} holds no study ({STORAGE_FILE} is missing); pass the study folder that "
            f"cnnkit tune printed, or --storage URL for a study on a server"
        )
    if storage is not None:
        _make_folder(folder)  # where best.yaml and the page go, also on a machine that ran no trial
    url = storage or f"sqlite:///{(folder / STORAGE_FILE).resolve()}"
    the_study = _open_study(url, folder.name, None, "none", None, create=False)
    monitor = the_study.user_attrs.get("config", {}).get("train.monitor", "val_accuracy")
    return write_results(summarize(the_study, folder, url, monitor), the_study)


def _check_arguments(
    config: Config, name: str, trials: int, timeout: float | None, pruner: str, heartbeat: int
) -> None:
    if not RUN_NAME.match(name):
        raise ConfigError(f"study name {name!r} must be letters, digits, '.', '_' or '-'")
    if pruner not in PRUNERS:
        raise ConfigError(f"unknown pruner {pruner!r}{did_you_mean(pruner, PRUNERS)}")
    if not 1 <= trials <= 1_000_000:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")
    if not 1 <= heartbeat <= 86_400:
        raise ConfigError(f"--heartbeat must be 1 to 86400 seconds, got {heartbeat}")
    if config.data.val_split == 0 and config.data.name != "folder":
        raise ConfigError(
            "tune compares trials on a validation split and this config has none "
            "(data.val_split=0, as in the fast preset); add data.val_split=0.1, for example"
        )


@contextlib.contextmanager
def _joining(folder: Path | None) -> Iterator[None]:
    """Workers started together on one machine join the study one at a time: the first creates
    the SQLite file's tables and the study, the others find them (Optuna's creation is not safe
    to race). A server's study is created once by the database's own constraints."""
    if folder is None:
        yield
        return
    import fcntl

    with (folder / ".join.lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnkitError(f"cannot create the study folder {folder}: {exc.strerror}") from None


def _hide_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return str(make_url(url).render_as_string(hide_password=True))
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _open_study(
    url: str, name: str, config: Config | None, pruner: str, heartbeat: int | None, create: bool
) -> Any:
    import optuna
    from optuna.storages import RDBStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Workers on one machine take turns at the file; wait for the lock rather than fail.
        engine = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):
        engine = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}

    def connect() -> Any:
        storage = RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=heartbeat,
            grace_period=3 * heartbeat if heartbeat else None,
            heartbeat_stale_trial_callback=_retry if heartbeat else None,
        )
        if not create:
            return optuna.load_study(study_name=name, storage=storage)
        assert config is not None
        return optuna.create_study(
            study_name=name,
            storage=storage,
            load_if_exists=True,
            direction="minimize" if config.train.monitor.endswith("loss") else "maximize",
            sampler=optuna.samplers.TPESampler(constant_liar=True),
            pruner=_pruner(pruner),
        )

    import sqlalchemy.exc

    try:
        for attempt in range(3):
            try:
                return connect()
            except sqlalchemy.exc.SQLAlchemyError:
                # Workers on several machines that start together race to create the tables.
                if attempt == 2:
                    raise
                time.sleep(1 + attempt)
    except KeyError:
        raise CnnkitError(
            f"the storage {_hide_password(url)} holds no study named {name!r}"
        ) from None
    except ImportError as exc:
        raise CnnkitError(
            f"the storage {_hide_password(url)} needs a database driver ({exc.name or exc}); "
            f"pip install 'cnnkit[tune]' has PostgreSQL's"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise CnnkitError(
            f"cannot open the study storage {_hide_password(url)}: {reason}"
        ) from None


def _pruner(name: str) -> Any:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def _record_study(
    study: Any, config: Config, params: Sequence[Param], enqueue: Sequence[Mapping[str, Any]]
) -> None:
    """Remember the base config and space in the study and refuse a worker with others; queue
    the base config's own settings first (in a new study) and then ``enqueue``."""
    flat = {k: v for k, v in flatten(config.to_dict()).items() if k != "name"}
    flat = {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}
    _require_same(study, "config", flat, "was started with another config",
                  "use the same --preset, --config and key=value, or another --study name")  # fmt: skip
    space = {p.key: p.describe() for p in params}
    _require_same(study, "space", space, "searches another space",
                  "use the same space file, or another --study name")  # fmt: skip
    if not study.get_trials(deepcopy=False):
        # The base config's own settings first, where the space holds them: the reference.
        own = {p.key: _current(config, p.key) for p in params}
        if all(p.contains(own[p.key]) for p in params):
            study.enqueue_trial(own, skip_if_exists=True)
    for values in enqueue:
        unknown = [k for k in values if k not in space]
        if unknown:
            raise ConfigError(f"enqueued setting {unknown[0]!r} is not in the space")
        outside = [p.key for p in params if p.key in values and not p.contains(values[p.key])]
        if outside:
            raise ConfigError(
                f"enqueued {outside[0]}={values[outside[0]]!r} lies outside the space"
            )
        study.enqueue_trial(dict(values))


def _require_same(study: Any, attr: str, value: dict[str, Any], what: str, fix: str) -> None:
    """Record ``value`` as the study's ``attr``, or refuse one that differs from the recorded."""
    saved = study.user_attrs.get(attr)
    if saved is None:
        study.set_user_attr(attr, value)
    elif saved != value:
        changed = [k for k in sorted(set(saved) | set(value)) if saved.get(k) != value.get(k)]
        listed = ", ".join(f"{k}: {saved.get(k, 'absent')!s} -> {value.get(k, 'absent')!s}"
                           for k in changed[:3])  # fmt: skip
        raise ConfigError(f"study {study.study_name} {what} ({listed}); {fix}")


def _current(config: Config, key: str) -> Any:
    """``key``'s value in ``config``; for a model parameter not set, the model's default."""
    if key.startswith("model.params.") and key[len("model.params.") :] not in config.model.params:
        from cnnkit.models import model_hparams

        return model_hparams(config.model.name).get(key[len("model.params.") :])
    return flatten(config.to_dict()).get(key)


def _work(study: Any, objective: _Objective, trials: int, timeout: float | None,
          heartbeat: int) -> None:  # fmt: skip
    """Run trials until the study holds ``trials`` finished ones; wait while the last ones run
    elsewhere, so that a worker that dies on one of them is noticed and its trial taken over."""
    import optuna
    from optuna.trial import TrialState

    start = time.monotonic()
    failures = 0
    while timeout is None or time.monotonic() - start < timeout:
        optuna.storages.fail_stale_trials(study)  # dead workers' trials: queued again
        states = [t.state for t in study.get_trials(deepcopy=False)]
        finished = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
        running = states.count(TrialState.RUNNING)
        if finished >= trials:
            return
        if finished + running >= trials and TrialState.WAITING not in states:
            time.sleep(min(heartbeat, 5))  # the last trials run elsewhere: see them end
            continue
        study.optimize(objective, n_trials=1, catch=(CnnkitError,), gc_after_trial=True)
        if objective.last_error is None:
            failures = 0
            continue
        failures += 1
        if failures >= MAX_FAILURES_IN_A_ROW:
            raise CnnkitError(
                f"{failures} trials in a row failed; the last: {objective.last_error}"
            )


class _Objective:
    """Trains one trial into its run folder and returns its objective value."""

    def __init__(self, study: Any, base: Config, params: Sequence[Param], folder: Path,
                 pruner: str, verbose: int | None) -> None:  # fmt: skip
        self.study, self.base, self.params, self.folder = study, base, params, folder
        self.pruner, self.verbose = pruner, verbose
        self.monitor = base.train.monitor
        self.last_error: str | None = None
        self.earlier: list[int] = []

    def __call__(self, trial: Any) -> float:
        from optuna import TrialPruned

        from cnnkit import env

        self.last_error = None
        values = {p.key: _suggest(trial, p) for p in self.params}
        frozen = _frozen(self.study, trial.number)
        retry_of = frozen.system_attrs.get("failed_trial")
        self.earlier = list(frozen.system_attrs.get("retry_history", []))  # this run's trials
        number = trial.number if retry_of is None else int(retry_of)
        path = self.folder / f"trial-{number}"
        trial.set_user_attr("run", str(path.resolve()))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        shown = ", ".join(f"{_short(k)}={_format(v)}" for k, v in values.items())
        log.info("trial %d%s: %s", trial.number,
                 f" (continues trial {number})" if retry_of is not None else "", shown)  # fmt: skip
        started = time.monotonic()
        try:
            with _quiet_runs():
                run = self._train(trial, values, path)
        except RunStopped as stop:
            self._record(Run(path), trial, number, values)
            log.info("trial %d pruned: %s", trial.number, stop)
            raise TrialPruned(str(stop)) from None
        except TrainingDiverged as exc:
            # As hopeless as a trial gets: pruned, so that the sampler learns to avoid it.
            run = Run(path)
            if run.file(RUN_FILE).is_file():
                run.update_meta(status="pruned", pruned={"reason": "diverged"})
                self._record(run, trial, number, values)
            log.info("trial %d pruned: the loss became NaN or infinite", trial.number)
            raise TrialPruned(str(exc)) from None
        except KeyboardInterrupt:
            _retry(self.study, _frozen(self.study, trial.number))
            log.info("trial %d is queued again: it continues %s when a worker runs",
                     trial.number, path)  # fmt: skip
            raise
        except CnnkitError as exc:
            self.last_error = str(exc)
            trial.set_user_attr("error", str(exc)[:500])
            log.warning("trial %d failed: %s", trial.number, exc)
            raise
        finally:
            env.import_keras().backend.clear_session()  # the next trial starts with no graphs
        value = _objective_value(run, self.monitor)
        self._record(run, trial, number, values, value)
        log.info("trial %d: %s %.4f (%.0f s)", trial.number, self.monitor, value,
                 time.monotonic() - started)  # fmt: skip
        return value

    def _train(self, trial: Any, values: dict[str, Any], path: Path) -> Any:
        from cnnkit.workflow import resume, train

        callbacks = [_pruning_callback(trial, self.monitor, self.pruner)]
        run = Run(path)
        if run.file(CONFIG_FILE).is_file() and run.file(RUN_FILE).is_file():
            if run.meta().get("status") == "complete":  # its worker died before telling the study
                return run
            log.info("continuing %s from its last checkpoint", path)
            return resume(run, verbose=self.verbose, callbacks=callbacks)
        if path.is_dir() and all(p.name == LOCK_FILE for p in path.iterdir()):
            shutil.rmtree(path)  # a worker died as it made the folder: nothing was saved
        config = self.base.replace(**values, name=path.name)
        return train(config, self.folder, verbose=self.verbose, callbacks=callbacks)

    def _record(self, run: Any, trial: Any, number: int, values: dict[str, Any],
                value: float | None = None) -> None:  # fmt: skip
        if not run.file(RUN_FILE).is_file():
            return
        trials = [*run.meta().get("tune", {}).get("trials", []), *self.earlier, trial.number]
        run.update_meta(tune={"study": self.study.study_name, "trial": number,
                              "trials": sorted(set(trials)), "params": values,
                              "objective": self.monitor, "value": value})  # fmt: skip


@contextlib.contextmanager
def _quiet_runs() -> Iterator[None]:
    """Trials say what they found in one line each; a run's own narrative (its data, model,
    test accuracy) stays in its folder. Warnings still show."""
    workflow = logging.getLogger("cnnkit.workflow")
    level = workflow.level
    workflow.setLevel(logging.WARNING)
    try:
        yield
    finally:
        workflow.setLevel(level)


def _format(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _pruning_callback(trial: Any, monitor: str, pruner: str) -> Any:
    """A Keras callback that reports ``monitor`` after every epoch (after cnnkit's checkpoint of
    it) and stops the run there when the pruner says so, except after the last epoch: a trial
    that has trained to the end keeps its value."""
    from cnnkit import env

    keras = env.import_keras()

    class Pruning(keras.callbacks.Callback):  # type: ignore[misc,name-defined]
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            value = (logs or {}).get(monitor)
            if value is None or not math.isfinite(float(value)):
                return
            trial.report(float(value), epoch + 1)
            last = epoch + 1 >= int(self.params.get("epochs") or 0)  # nothing left to save
            if not last and trial.should_prune():
                raise RunStopped(
                    f"{monitor} {float(value):.4f} after epoch {epoch + 1} is worse than the "
                    f"{pruner} pruner allows",
                    "pruned",
                    {"pruned": {"epoch": epoch + 1, monitor: float(value), "pruner": pruner}},
                )

    return Pruning()


def _retry(study: Any, trial: Any) -> None:
    """Queue ``trial`` (a frozen trial that will not finish) again with the same settings: a
    dead worker's (found by the heartbeat) or an interrupted one's. The new trial continues the
    first one's run folder (Optuna records it as ``failed_trial``), at most three times."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    RetryHeartbeatStaleTrialCallback(max_retry=3, inherit_intermediate_values=True)(study, trial)


def _frozen(study: Any, number: int) -> Any:
    """The stored (frozen) trial numbered ``number``: its system attributes and parameters."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _objective_value(run: Any, monitor: str) -> float:
    """``monitor`` for the weights the run keeps: the best epoch's, or the last epoch's."""
    values = run.history().get(monitor)
    if not values:
        raise ConfigError(
            f"run {run.path} has no {monitor}: tune needs a validation split (data.val_split)"
        )
    meta = run.meta()
    best = meta.get("best_epoch")
    if meta.get("kept") == "best" and best:
        return float(values[int(best) - 1])
    return float(values[-1])


# ----------------------------------------------------------------------------- results


def summarize(study: Any, folder: Path, url: str, monitor: str) -> StudyResult:
    """The study's trials as :class:`TrialSummary` rows, and its best trial."""
    from optuna.trial import TrialState

    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
             TrialState.RUNNING: "running", TrialState.WAITING: "waiting",
             TrialState.FAIL: "failed"}  # fmt: skip
    rows = []
    for t in study.get_trials(deepcopy=False):
        value = t.value if t.state == TrialState.COMPLETE else None
        if value is None and t.intermediate_values:
            value = t.intermediate_values[max(t.intermediate_values)]
        seconds = None
        if t.datetime_start and t.datetime_complete:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append(
            TrialSummary(
                number=t.number,
                state=names.get(t.state, str(t.state)),
                value=value,
                params=dict(t.params),
                run=t.user_attrs.get("run"),
                seconds=seconds,
                epochs=max(t.intermediate_values) if t.intermediate_values else None,
                retry_of=t.system_attrs.get("failed_trial"),
                error=t.user_attrs.get("error"),
            )
        )
    complete = [r for r in rows if r.state == "complete" and r.value is not None]
    best = None
    if complete:
        pick = min if study.direction.name == "MINIMIZE" else max
        best = pick(complete, key=lambda r: r.value)  # type: ignore[arg-type,return-value]
    return StudyResult(study.study_name, folder, _hide_password(url), monitor,
                       study.direction.name.lower(), rows, best)  # fmt: skip


def write_results(result: StudyResult, study: Any) -> StudyResult:
    """Write best.yaml (when a trial is complete) and study.html into the study folder."""
    from cnnkit.atomic import write_text

    if result.best is not None:
        base = Config.from_dict(
            {k: v for k, v in study.user_attrs.get("config", {}).items() if k != "name"}
        )
        best = base.replace(**result.best.params, name=f"{result.name}-best")
        header = (
            f"# The best trial of study {result.name}: trial {result.best.number}, "
            f"{result.monitor} {result.best.value:.4f} ({result.best.run}).\n"
            f"# Train it: cnnkit train --config {BEST_FILE}\n"
        )
        path = result.folder / BEST_FILE
        write_text(path, header + best.to_yaml())
        result.best_config = path
    result.page = write_study_page(result, study)
    return result


def write_study_page(result: StudyResult, study: Any) -> Path:
    """study.html: the optimisation history, the parameters' importances, the best trials side
    by side, every trial, and the space (self-contained, like the report)."""
    from cnnkit import figures, pages
    from cnnkit.atomic import write_text

    drawn = result.folder / "figures"
    drawn.mkdir(exist_ok=True)
    points = [(t.number, t.value, t.state) for t in result.trials]
    history = figures.plot_study_history(points, result.monitor, result.direction,
                                         drawn / "history.png")  # fmt: skip
    importances, why_not = param_importances(study)
    importance_png = (
        figures.plot_importances(importances, drawn / "importances.png") if importances else None
    )
    ranked = sorted(
        (t for t in result.trials if t.state == "complete" and t.value is not None),
        key=lambda t: t.value,  # type: ignore[arg-type,return-value]
        reverse=result.direction == "maximize",
    )[:5]
    keys = sorted({k for t in result.trials for k in t.params})
    side = (
        ["", *(f"trial {t.number}" for t in ranked)],
        [
            [result.monitor, *(_format(t.value) for t in ranked)],
            ["epochs", *(str(t.epochs or "-") for t in ranked)],
            ["seconds", *(f"{t.seconds:.0f}" if t.seconds else "-" for t in ranked)],
            *([k, *(_format(t.params.get(k, "-")) for t in ranked)] for k in keys),
        ],
    )
    every = (
        ["trial", "state", result.monitor, "epochs", "seconds", *map(_short, keys), "run folder"],
        [
            [t.number, t.state, "-" if t.value is None else _format(t.value), t.epochs or "-",
             "-" if t.seconds is None else f"{t.seconds:.0f}",
             *(_format(t.params.get(k, "-")) for k in keys),
             Path(t.run).name if t.run else "-"]
            for t in result.trials
        ],
    )  # fmt: skip
    page = pages.study_page(
        name=result.name,
        subtitle=f"{result.monitor} ({result.direction}) on the validation split; "
        f"storage {result.storage}",
        cards=[(f"{n}", state) for state, n in sorted(result.counts().items())],
        best=None
        if result.best is None
        else (
            f"trial {result.best.number}: {result.monitor} {_format(result.best.value)}",
            result.best.run or "",
            str(result.best_config or ""),
        ),
        figures={"history": history, "importances": importance_png},
        importance_note=why_not,
        side_by_side=side,
        trials=every,
        space=[(k, v) for k, v in study.user_attrs.get("space", {}).items()],
    )
    path = result.folder / PAGE_FILE
    write_text(path, page)
    return path


def param_importances(study: Any) -> tuple[dict[str, float], str]:
    """Optuna's importance of each parameter for the objective over the complete trials (its
    default evaluator), or why there are none yet."""
    import optuna
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 3:
        return {}, f"importances need at least 3 complete trials ({len(complete)} so far)"
    try:
        with warnings.catch_warnings():  # "importances will be equal" when all values tie
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study)), ""
    except (RuntimeError, ValueError) as exc:
        return {}, f"importances could not be computed: {exc}"
