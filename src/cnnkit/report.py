"""Pictures drawn from saved numbers (history.csv, metrics.json); nothing here computes a metric."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.metrics import EvalResult


def read_history(path: Path) -> dict[str, list[float]]:
    """history.csv (as Keras's CSVLogger writes it) as columns of floats."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(float("nan"))
    return columns


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_curve(history: dict[str, list[float]], metric: str, path: Path, title: str) -> Path:
    """Training and validation ``metric`` per epoch, as the tutorial plots them."""
    plt = _pyplot()
    epochs = np.arange(1, len(history.get(metric, [])) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.plot(epochs, history.get(metric, []), label=f"training {metric}", color="tab:blue")
    if f"val_{metric}" in history:
        ax.plot(epochs, history[f"val_{metric}"], label=f"validation {metric}", color="tab:orange")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion(result: EvalResult, path: Path) -> Path:
    """Confusion matrix: colour by share of the true class, counts written in each cell."""
    plt = _pyplot()
    counts = np.asarray(result.confusion)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(result.class_names)
    size = max(4.8, 0.45 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=120)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(range(n), result.class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), result.class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix (test accuracy {result.accuracy:.2%})")
    if n <= 20:  # beyond that the numbers would not be legible
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(run_path: Path, result: EvalResult | None) -> list[Path]:
    """accuracy.png and loss.png from history.csv, confusion_matrix.png from the test result."""
    written: list[Path] = []
    history_file = run_path / "history.csv"
    if history_file.is_file():
        history = read_history(history_file)
        written.append(
            plot_curve(history, "accuracy", run_path / "accuracy.png", "Accuracy per epoch")
        )
        written.append(plot_curve(history, "loss", run_path / "loss.png", "Loss per epoch"))
    if result is not None:
        written.append(plot_confusion(result, run_path / "confusion_matrix.png"))
    return written
