"""Runs side by side: how their configs differ, their final numbers, and their curves on one chart.

Reads only what every run folder keeps (run.json, config.yaml, metrics.json, history.csv), so
runs from other machines, or whose model file is gone, compare as well. ``compare(runs)`` writes
a folder with compare.html (self-contained), compare.json and the two charts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.errors import RunError
from cnnkit.log import printable


@dataclass(frozen=True)
class RunSummary:
    label: str
    path: Path
    meta: dict[str, Any]
    config: dict[str, Any]  # flat: "train.epochs" -> 100
    test: dict[str, Any] | None  # metrics.json's numbers; None for a run that did not finish
    history: dict[str, list[float]]

    def row(self) -> dict[str, Any]:
        test = self.test or {}
        return {
            "run": self.label,
            "model": self.meta.get("model"),
            "status": self.meta.get("status"),
            "epochs": self.meta.get("epochs"),
            "train_seconds": self.meta.get("train_seconds"),
            "train_images_per_second": self.meta.get("train_images_per_second"),
            "test_accuracy": test.get("accuracy"),
            "test_loss": test.get("loss"),
            "macro_f1": test.get("macro_f1"),
            "ece": test.get("ece"),
        }


@dataclass
class Comparison:
    """Two or more runs: their summaries, the config keys in which they differ, and where the
    comparison was written (``folder``, with its ``figures``)."""

    runs: list[RunSummary]
    differences: dict[str, list[Any]]  # config key -> its value in each run (None: not set)
    folder: Path | None = None
    figures: dict[str, Path] = field(default_factory=dict)

    @property
    def page(self) -> Path:
        """compare.html, once the comparison is written."""
        if self.folder is None:
            raise ValueError("the comparison has not been written (compare() writes it)")
        return self.folder / "compare.html"

    def rows(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.runs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [{**r.row(), "path": str(r.path)} for r in self.runs],
            "config_differences": self.differences,
        }


def summarize(path: str | Path, label: str | None = None) -> RunSummary:
    """What a run folder says about itself, finished or not; a RunError if it is not a run."""
    from cnnkit.config import flatten
    from cnnkit.runs import METRICS_FILE, open_run

    run = open_run(path, model=False)
    test = run.metrics()["test"] if run.file(METRICS_FILE).is_file() else None
    if test is not None and test.get("ece") is None:  # evaluated before metrics.json held it
        calibration = run.report_numbers().get("calibration")
        if isinstance(calibration, dict) and "ece" in calibration:
            test["ece"] = calibration["ece"]
    return RunSummary(
        label or run.name, run.path, run.meta(), flatten(run.config().to_dict()), test,
        run.history(),
    )  # fmt: skip


def compare(paths: Sequence[str | Path], out: str | Path | None = None) -> Comparison:
    """Set two or more runs side by side (``cnnkit compare``): their summaries and the config
    keys in which they differ, written to a new folder ``out`` (default: compare-RUN-RUN...
    beside the first run; an existing folder is never overwritten: -2, -3... is added)."""
    from cnnkit.runs import fresh_folder

    comparison = summarize_runs(paths)
    if out is None:
        joined = "-".join(r.path.name for r in comparison.runs)
        out = comparison.runs[0].path.parent / f"compare-{joined}"[:80]
    out = Path(out)
    return write_comparison(comparison, fresh_folder(out.parent, out.name))


def summarize_runs(paths: Sequence[str | Path]) -> Comparison:
    """Summaries of two or more runs and the config keys in which they differ (nothing written)."""
    resolved = [Path(p).resolve() for p in paths]
    if len(resolved) < 2:
        raise RunError("compare needs two or more run folders")
    if len(set(resolved)) < len(resolved):
        raise RunError("the same run folder is given twice")
    names = [p.name for p in resolved]
    # Runs of the same name from different folders are told apart by their parent folder.
    labels = [
        n if names.count(n) == 1 else f"{p.parent.name}/{n}"
        for n, p in zip(names, resolved, strict=True)
    ]
    runs = [summarize(p, label) for p, label in zip(paths, labels, strict=True)]
    keys = sorted(set().union(*(r.config for r in runs)))
    differences = {
        k: [r.config.get(k) for r in runs]
        for k in keys
        if len({json.dumps(r.config.get(k), sort_keys=True) for r in runs}) > 1
    }
    return Comparison(runs, differences)


def _plot_curves(runs: Sequence[RunSummary], path: Path, against: str) -> Path:
    from cnnkit.figures import plot_runs

    return plot_runs([(r.label, r.history, r.test) for r in runs], path, against)


def write_comparison(comparison: Comparison, folder: Path) -> Comparison:
    """compare.html (self-contained), compare.json, and the two charts as PNGs in ``folder``."""
    from cnnkit.atomic import write_json, write_text
    from cnnkit.pages import compare_page

    comparison.folder = folder
    comparison.figures = {
        "by_epoch": _plot_curves(comparison.runs, folder / "curves_by_epoch.png", "epoch"),
        "by_time": _plot_curves(comparison.runs, folder / "curves_by_time.png", "time"),
    }
    write_json(folder / "compare.json", comparison.to_dict())
    rows = comparison.rows()
    header = list(rows[0])
    metrics = (header, [[format_cell(row[k], k) for k in header] for row in rows])
    differences = [[k, *(config_cell(v) for v in values)]
                   for k, values in comparison.differences.items()]  # fmt: skip
    labels = [r.label for r in comparison.runs]
    page = compare_page(labels, [r.path for r in comparison.runs], metrics, differences,
                        comparison.figures)  # fmt: skip
    write_text(comparison.page, page)
    return comparison


_FORMATS = {"train_seconds": "{:,.1f}", "train_images_per_second": "{:,.0f}", "seconds": "{:,.1f}"}


def config_cell(value: Any) -> str:
    """A config value as config.yaml writes it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def format_cell(value: Any, key: str | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return _FORMATS.get(key or "", "{:.4f}" if abs(value) < 10 else "{:,.1f}").format(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def text_table(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as aligned plain-text columns."""
    header = list(rows[0])
    cells = [header, *([printable(format_cell(row[k], k)) for k in header] for row in rows)]
    widths = [max(len(str(line[i])) for line in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    )
