"""The study: where it is stored, how workers join it and share its trials, and the two verbs,
:func:`tune` (``cnnkit tune``) and :func:`describe_study` (``cnnkit tune show``).

A study lives in an Optuna storage: a SQLite file in the study folder by default, so several
``cnnkit tune`` processes on one machine share it, or a server (``postgresql://...``) for
workers on several machines. Running the same command again continues the study. Each worker
beats a heartbeat; a worker that dies mid-trial is noticed by the others (or by the next one to
start), and its trial is queued again (:func:`cnnkit.tuning.trial.retry`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cnnkit.config import RUN_NAME, Config, TrainConfig, flatten, monitor_mode
from cnnkit.errors import CnnkitError, ConfigError, did_you_mean
from cnnkit.tuning.results import JOIN_LOCK, STORAGE_FILE, StudyResult, summarize, write_results
from cnnkit.tuning.space import Param, parse_space, read_space
from cnnkit.tuning.trial import Objective, retry

log = logging.getLogger(__name__)

# MedianPruner prunes nothing until this many trials are complete (Optuna's default is 5).
MEDIAN_STARTUP_TRIALS = 4


def _median() -> Any:
    """Stop a trial worse than the median of the earlier trials at the same epoch."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS)


def _halving() -> Any:
    """Successive halving."""
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner()


def _none() -> Any:
    import optuna

    return optuna.pruners.NopPruner()


# The pruners --pruner takes, by name.
_PRUNERS = {"median": _median, "halving": _halving, "none": _none}
PRUNERS = tuple(_PRUNERS)
DEFAULT_PRUNER = "median"
# A worker stops after this many failed trials in a row (a broken setting, not bad luck).
MAX_FAILURES_IN_A_ROW = 3


def tune(
    space: str | Path | Mapping[str, Any],
    config: Config,
    trials: int = 20,
    timeout: float | None = None,
    study: str | None = None,
    storage: str | None = None,
    pruner: str = DEFAULT_PRUNER,
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
    objective = Objective(the_study, config, params, folder, pruner, verbose)
    log.info(
        "study %s (%s, %s): %d trials of %s; trials in %s",
        name, _hide_password(url), the_study.direction.name.lower(), trials,
        "; ".join(f"{p.key} {p.describe()}" for p in params), folder,
    )  # fmt: skip
    _work(the_study, objective, trials, timeout, heartbeat)
    return write_results(
        summarize(the_study, folder, _hide_password(url), config.train.monitor), the_study
    )


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
    monitor = the_study.user_attrs.get("config", {}).get("train.monitor", TrainConfig().monitor)
    return write_results(summarize(the_study, folder, _hide_password(url), monitor), the_study)


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

    with (folder / JOIN_LOCK).open("a+") as handle:
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
            heartbeat_stale_trial_callback=retry if heartbeat else None,
        )
        if not create:
            return optuna.load_study(study_name=name, storage=storage)
        assert config is not None
        return optuna.create_study(
            study_name=name,
            storage=storage,
            load_if_exists=True,
            direction="minimize" if monitor_mode(config.train.monitor) == "min" else "maximize",
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
    return _PRUNERS[name]()


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


def _work(study: Any, objective: Objective, trials: int, timeout: float | None,
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
