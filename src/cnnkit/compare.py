"""Runs side by side: how their configs differ, their final numbers, and their curves on one chart.

Reads only what every run folder keeps (run.json, config.yaml, metrics.json, history.csv), so
runs from other machines, or whose model file is gone, compare as well.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import RunError


@dataclass(frozen=True)
class RunSummary:
    label: str
    path: Path
    meta: dict[str, Any]
    config: dict[str, Any]  # flat: "train.epochs" -> 100
    test: dict[str, Any] | None  # metrics.json's numbers; None for a run that did not finish
    history: dict[str, list[float]]

    def wall_seconds(self) -> np.ndarray:
        """Seconds since training began at the end of each epoch (validation included)."""
        return np.cumsum(self.history.get("epoch_seconds", []))

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
    runs: list[RunSummary]
    differences: dict[str, list[Any]]  # config key -> its value in each run (None: not set)
    folder: Path | None = None
    figures: dict[str, Path] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.runs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [{**r.row(), "path": str(r.path)} for r in self.runs],
            "config_differences": self.differences,
        }


def summarize(path: str | Path, label: str | None = None) -> RunSummary:
    """What a run folder says about itself; a RunError if it is not a run."""
    from cnnkit.config import flatten
    from cnnkit.report import read_history
    from cnnkit.runs import open_run_folder

    run = open_run_folder(path)
    test = None
    if run.file("metrics.json").is_file():
        try:
            test = json.loads(run.file("metrics.json").read_text(encoding="utf-8"))["test"]
        except (OSError, ValueError, KeyError, TypeError):
            raise RunError(
                f"{run.file('metrics.json')} is unreadable; the run is damaged"
            ) from None
    report_file = run.file("report.json")  # runs evaluated before metrics.json held the ECE
    if test is not None and test.get("ece") is None and report_file.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            test["ece"] = json.loads(report_file.read_text(encoding="utf-8"))["calibration"]["ece"]
    history_file = run.file("history.csv")
    history = read_history(history_file) if history_file.is_file() else {}
    return RunSummary(
        label or run.name, run.path, run.meta(), flatten(run.config().to_dict()), test, history
    )


def compare(paths: Sequence[str | Path]) -> Comparison:
    """Summaries of two or more runs and the config keys in which they differ."""
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


def plot_curves(runs: Sequence[RunSummary], path: Path, against: str) -> Path:
    """Accuracy and loss of every run on one chart each: validation solid (where there is a
    validation split), training dashed, the final test accuracy as a star; against epochs or
    against the wall-clock time of training."""
    from cnnkit.report import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.6))
    longest = max((r.wall_seconds()[-1] for r in runs if len(r.wall_seconds())), default=0.0)
    minutes = against == "time" and longest > 600
    for i, r in enumerate(runs):
        color = f"C{i % 10}"
        x = np.arange(1, len(r.history.get("loss", [])) + 1, dtype=float)
        if against == "time":
            x = r.wall_seconds() / (60 if minutes else 1)
            if len(x) != len(r.history.get("loss", [])):
                continue  # a history without epoch times
        for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
            if metric in r.history:
                ax.plot(x, r.history[metric], ls="--", color=color, alpha=0.7,
                        label=f"{r.label} training")  # fmt: skip
            if f"val_{metric}" in r.history:
                ax.plot(x, r.history[f"val_{metric}"], color=color, label=f"{r.label} validation")
        if r.test and len(x):
            axes[0].plot(x[-1], r.test["accuracy"], "*", ms=13, color=color, mec="black",
                         label=f"{r.label} test {r.test['accuracy']:.2%}")  # fmt: skip
            axes[1].plot(x[-1], r.test["loss"], "*", ms=13, color=color, mec="black",
                         label=f"{r.label} test")  # fmt: skip
    xlabel = "epoch" if against == "epoch" else f"training time ({'min' if minutes else 's'})"
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.set_title(
            f"{metric.capitalize()} {'per epoch' if against == 'epoch' else 'against training time'}"
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def write_comparison(comparison: Comparison, folder: Path) -> Comparison:
    """compare.html (self-contained), compare.json, and the two charts as PNGs in ``folder``."""
    import html

    from cnnkit.report import STYLE, embed_png, html_table
    from cnnkit.runs import write_json, write_text

    comparison.folder = folder
    comparison.figures = {
        "by_epoch": plot_curves(comparison.runs, folder / "curves_by_epoch.png", "epoch"),
        "by_time": plot_curves(comparison.runs, folder / "curves_by_time.png", "time"),
    }
    write_json(folder / "compare.json", comparison.to_dict())
    rows = comparison.rows()
    header = list(rows[0])
    metrics = html_table(header, [[format_cell(row[k], k) for k in header] for row in rows])
    labels = [r.label for r in comparison.runs]
    differences = html_table(
        ["config key", *labels],
        [[k, *(config_cell(v) for v in values)] for k, values in comparison.differences.items()],
    )
    paths = "".join(
        f"<li>{html.escape(r.label)}: {html.escape(str(r.path))}</li>" for r in comparison.runs
    )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>cnnkit compare: {html.escape(', '.join(labels))}</title><style>{STYLE}</style>"
        f"</head><body><header><h1>cnnkit compare</h1><p>{html.escape(' vs '.join(labels))}</p>"
        f"</header><main><section><h2>Final numbers</h2>{metrics}<ul>{paths}</ul></section>"
        f"<section><h2>Curves per epoch</h2>{embed_png(comparison.figures['by_epoch'], 'curves per epoch')}</section>"
        f"<section><h2>Curves against training time</h2>{embed_png(comparison.figures['by_time'], 'curves against time')}</section>"
        f"<section><h2>Config differences</h2>{differences}</section></main></body></html>\n"
    )
    write_text(folder / "compare.html", page)
    return comparison


_FORMATS = {"train_seconds": "{:,.1f}", "train_images_per_second": "{:,.0f}"}


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
    cells = [header, *([format_cell(row[k], k) for k in header] for row in rows)]
    widths = [max(len(str(line[i])) for line in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    )
