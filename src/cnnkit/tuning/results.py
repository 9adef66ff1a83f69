"""What a study found: its trials as rows (:class:`TrialSummary`), the best one, and the files
written into the study folder for a person: ``best.yaml`` (the best trial's whole config, which
``cnnkit train --config`` takes) and ``study.html`` (the optimisation history, the parameters'
importances, the best trials side by side, every trial, the space)."""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.config import Config

# The study folder, RUNS_DIR/<study>: its own files (the trials are run folders beside them).
STORAGE_FILE = "study.db"  # the SQLite study, unless --storage names a server
JOIN_LOCK = ".join.lock"  # workers starting together join the study one at a time
BEST_FILE = "best.yaml"
PAGE_FILE = "study.html"
FIGURES = "figures"  # the page's pictures


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
                **{short(k): t.params.get(k) for k in keys},
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


def short(key: str) -> str:
    """A parameter's column name: its key without the section (model.params.dropout: dropout)."""
    return key.rsplit(".", 1)[-1] if key.count(".") <= 1 else key.split(".", 2)[-1]


def summarize(study: Any, folder: Path, storage: str, monitor: str) -> StudyResult:
    """The study's trials as :class:`TrialSummary` rows, and its best trial (``storage``: its
    URL as shown, the password hidden)."""
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
    return StudyResult(study.study_name, folder, storage, monitor,
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

    drawn = result.folder / FIGURES
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
            [result.monitor, *(formatted(t.value) for t in ranked)],
            ["epochs", *(str(t.epochs or "-") for t in ranked)],
            ["seconds", *(f"{t.seconds:.0f}" if t.seconds else "-" for t in ranked)],
            *([k, *(formatted(t.params.get(k, "-")) for t in ranked)] for k in keys),
        ],
    )
    every = (
        ["trial", "state", result.monitor, "epochs", "seconds", *map(short, keys), "run folder"],
        [
            [t.number, t.state, "-" if t.value is None else formatted(t.value), t.epochs or "-",
             "-" if t.seconds is None else f"{t.seconds:.0f}",
             *(formatted(t.params.get(k, "-")) for k in keys),
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
            f"trial {result.best.number}: {result.monitor} {formatted(result.best.value)}",
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


def formatted(value: Any) -> str:
    """A parameter's or objective's value as lines and pages show it (4 significant digits)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
