"""One trial: an ordinary run folder, ``STUDY/trial-<n>``, trained by :func:`cnnkit.train` with
the trial's settings. It reports ``train.monitor`` after every epoch, and the pruner may stop it
there (run.json then says ``status: pruned``). A trial whose worker died, or that was
interrupted, is queued again and continues the same run folder from its last checkpoint."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cnnkit.config import Config
from cnnkit.errors import CnnkitError, ConfigError, RunStopped, TrainingDiverged
from cnnkit.runs import CONFIG_FILE, LOCK_FILE, RUN_FILE, Run
from cnnkit.tuning.results import formatted, short
from cnnkit.tuning.space import Param, suggest

log = logging.getLogger(__name__)


class Objective:
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
        values = {p.key: suggest(trial, p) for p in self.params}
        frozen = frozen_trial(self.study, trial.number)
        retry_of = frozen.system_attrs.get("failed_trial")
        self.earlier = list(frozen.system_attrs.get("retry_history", []))  # this run's trials
        number = trial.number if retry_of is None else int(retry_of)
        path = self.folder / f"trial-{number}"
        trial.set_user_attr("run", str(path.resolve()))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        shown = ", ".join(f"{short(k)}={formatted(v)}" for k, v in values.items())
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
            retry(self.study, frozen_trial(self.study, trial.number))
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


def retry(study: Any, trial: Any) -> None:
    """Queue ``trial`` (a frozen trial that will not finish) again with the same settings: a
    dead worker's (found by the heartbeat) or an interrupted one's. The new trial continues the
    first one's run folder (Optuna records it as ``failed_trial``), at most three times."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    RetryHeartbeatStaleTrialCallback(max_retry=3, inherit_intermediate_values=True)(study, trial)


def frozen_trial(study: Any, number: int) -> Any:
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
