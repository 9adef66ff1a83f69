"""Every picture cnnkit draws, as PNG files: training curves, confusion matrices, per-class
scores, reliability diagrams, grids of captioned images (with heatmaps), runs side by side, and
an image folder's sample grid.

Drawing only: each function takes numbers that were computed elsewhere (metrics.py,
analysis.py, explain.py) and writes one file. The report page, the comparison page and
``cnnkit data inspect`` all draw through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit import analysis
from cnnkit.metrics import EvalResult

DPI = 120


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically) and close it."""
    from cnnkit.atomic import atomic_write

    plt = pyplot()
    try:
        with atomic_write(path) as f:
            fig.savefig(f, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return path


def plot_curve(
    history: dict[str, list[float]],
    metric: str,
    path: Path,
    title: str,
    best_epoch: int | None = None,
    overfit_epoch: int | None = None,
) -> Path:
    """Training and validation ``metric`` per epoch, with the kept checkpoint and the start of
    over-fitting marked where known."""
    plt = pyplot()
    epochs = np.arange(1, len(history.get(metric, [])) + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(epochs, history.get(metric, []), label=f"training {metric}", color="tab:blue")
    if f"val_{metric}" in history:
        ax.plot(epochs, history[f"val_{metric}"], label=f"validation {metric}", color="tab:orange")
    if overfit_epoch is not None and len(epochs):
        ax.axvspan(overfit_epoch - 0.5, epochs[-1] + 0.5, color="tab:red", alpha=0.08, lw=0)
        ax.axvline(overfit_epoch - 0.5, color="tab:red", ls=":", lw=1.2,
                   label=f"over-fitting from epoch {overfit_epoch}")  # fmt: skip
    if best_epoch is not None:
        ax.axvline(best_epoch, color="tab:green", ls="--", lw=1.2,
                   label=f"best checkpoint (epoch {best_epoch})")  # fmt: skip
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(result: EvalResult, path: Path, normalized: bool = False) -> Path:
    """Confusion matrix as a heatmap: counts, or each row as shares of its true class."""
    plt = pyplot()
    counts = np.asarray(result.confusion)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    values = share if normalized else counts
    n = len(result.class_names)
    size = min(max(5.2, 0.5 * n + 2.5), 24.0)
    ticks = 9 if n <= 20 else max(6.0, 9 - n / 25)
    fig, ax = plt.subplots(figsize=(size, size * 0.88))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalized else max(1, counts.max()))
    label = "share of the true class" if normalized else "images"
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=label)
    ax.set_xticks(range(n), result.class_names, rotation=45 if n <= 20 else 90,
                  ha="right" if n <= 20 else "center", fontsize=ticks)  # fmt: skip
    ax.set_yticks(range(n), result.class_names, fontsize=ticks)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    kind = "row-normalised" if normalized else "counts"
    ax.set_title(f"Confusion matrix, {kind} (test accuracy {result.accuracy:.2%})")
    if n <= 20:  # beyond that the numbers would not be legible
        dark = values > (0.5 if normalized else 0.5 * counts.max())
        for i in range(n):
            for j in range(n):
                text = f"{share[i, j]:.0%}" if normalized else str(counts[i, j])
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if dark[i, j] else "black")  # fmt: skip
    fig.tight_layout()
    return save_figure(fig, path)


def plot_per_class(result: EvalResult, path: Path) -> Path:
    """Precision, recall and F1 per class: grouped bars, or for many classes F1 bars sorted from
    the worst class with precision and recall as marks."""
    plt = pyplot()
    names = result.class_names
    n = len(names)
    if n <= 20:
        fig, ax = plt.subplots(figsize=(max(6.4, 0.75 * n + 1.5), 4.4))
        x = np.arange(n)
        for k, (label, values) in enumerate(
            (("precision", result.precision), ("recall", result.recall), ("F1", result.f1))
        ):
            ax.bar(x + (k - 1) * 0.27, values, width=0.27, label=label)
        ax.set_xticks(x, names, rotation=30 if n > 5 else 0, ha="right" if n > 5 else "center")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("score")
        ax.set_xlabel("class")
        ax.legend(ncols=3, fontsize=9, loc="lower right")
        ax.grid(axis="y", alpha=0.3)
    else:
        order = np.argsort(result.f1, kind="stable")
        fig, ax = plt.subplots(figsize=(7.5, 0.19 * n + 1.4))
        y = np.arange(n)
        ax.barh(y, np.asarray(result.f1)[order], color="tab:green", alpha=0.7, label="F1")
        ax.plot(np.asarray(result.precision)[order], y, "|", color="tab:blue", ms=7,
                label="precision")  # fmt: skip
        ax.plot(np.asarray(result.recall)[order], y, "|", color="tab:orange", ms=7, label="recall")
        ax.set_yticks(y, [names[i] for i in order], fontsize=7)
        ax.set_ylim(-0.7, n - 0.3)
        ax.set_xlim(0, 1.02)
        ax.set_xlabel("score")
        ax.invert_yaxis()  # the worst class on top, where the eye starts
        ax.legend(fontsize=9, loc="upper right")  # the worst classes leave that corner free
        ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"Per-class scores (macro F1 {result.macro_f1:.3f})")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_reliability(
    calibration: analysis.Calibration,
    path: Path,
    before: analysis.Calibration | None = None,
) -> Path:
    """Reliability diagram: accuracy against confidence per bin, and how many images each bin
    has; with ``before``, the network's own probabilities on the left and the calibrated ones on
    the right."""
    plt = pyplot()
    panels = (
        [(before, "network's own"), (calibration, "calibrated")] if before else [(calibration, "")]
    )
    fig, axes = plt.subplots(
        2, len(panels), figsize=(5.6 * len(panels), 6.2), sharex=True, squeeze=False,
        gridspec_kw={"height_ratios": [3, 1]},
    )  # fmt: skip
    for column, (bins, label) in enumerate(panels):
        assert bins is not None
        _reliability_panel(axes[0][column], axes[1][column], bins, label)
    fig.tight_layout()
    return save_figure(fig, path)


def _reliability_panel(ax: Any, below: Any, calibration: analysis.Calibration, label: str) -> None:
    edges = np.asarray(calibration.edges)
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    accuracy = np.nan_to_num(np.asarray(calibration.accuracy, dtype=float))
    confidence = np.asarray(calibration.confidence, dtype=float)
    ax.bar(centers, accuracy, width=width * 0.95, color="tab:blue", label="accuracy in the bin")
    filled = ~np.isnan(confidence)
    low = np.minimum(confidence[filled], accuracy[filled])
    # The gap hatched, unfilled, so that the accuracy bar stays visible under it either way.
    ax.bar(centers[filled], np.abs(confidence[filled] - accuracy[filled]), bottom=low,
           width=width * 0.95, fill=False, hatch="///", edgecolor="tab:red", lw=0,
           label="gap to confidence")  # fmt: skip
    ax.plot(centers[filled], confidence[filled], "_", color="black", ms=12, mew=2,
            label="mean confidence in the bin")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    prefix = label[:1].upper() + label[1:] if label else "Reliability"
    ax.set_title(f"{prefix} (expected calibration error {calibration.ece:.2%})")
    ax.legend(fontsize=9, loc="upper left")
    ax.grid(alpha=0.3)
    below.bar(centers, calibration.count, width=width * 0.95, color="tab:grey")
    below.set_ylabel("images")
    below.set_xlabel("confidence (top probability)")
    below.grid(alpha=0.3)


def plot_coverage(
    coverage: analysis.Coverage, points: Sequence[analysis.Operating], path: Path
) -> Path:
    """Accuracy against coverage: answering only the images the model is most sure of, how
    accurate it is; each operating point marked with its confidence threshold."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(np.asarray(coverage.coverage) * 100, np.asarray(coverage.accuracy) * 100,
            color="tab:blue", lw=2)  # fmt: skip
    for point in points:
        ax.plot(point.coverage * 100, point.accuracy * 100, "o", color="tab:red")
        # Labels below-left of their points: the curve falls to the right, so they stay clear.
        ax.annotate(f"confidence \u2265 {point.threshold:.2f}: {point.accuracy:.1%} on "
                    f"{point.coverage:.0%}", (point.coverage * 100, point.accuracy * 100),
                    textcoords="offset points", xytext=(-10, -4), ha="right", va="top",
                    fontsize=9)  # fmt: skip
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of test images answered, most confident first (%)")
    ax.set_ylabel("accuracy on them (%)")
    ax.set_title("Accuracy against coverage")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


@dataclass(frozen=True)
class Tile:
    image: np.ndarray  # uint8 (H, W, C)
    title: str
    color: str = "black"
    heatmap: np.ndarray | None = None  # (H, W) in [0, 1], drawn over the image


def _pixels(tile: Tile, scale: int) -> np.ndarray:
    """The tile as float RGB in [0, 1], enlarged ``scale`` times (nearest: pixels stay visible),
    with its heatmap blended over it (jet colours, 45 %)."""
    from cnnkit.explain import overlay, resize_maps

    image = np.repeat(np.repeat(tile.image, scale, axis=0), scale, axis=1)
    if tile.heatmap is None:
        return overlay(image, None)
    return overlay(image, resize_maps(tile.heatmap[np.newaxis], image.shape[:2])[0])


def plot_grid(
    rows: Sequence[tuple[str | None, Sequence[Tile]]], path: Path, title: str, columns: int
) -> Path:
    """Rows of captioned images, drawn as one picture (one axes, not one per image: a grid of
    24 images takes a tenth of a second instead of two), with an optional caption left of each row."""
    plt = pyplot()
    first = next((t for _, tiles in rows for t in tiles), None)
    height, width = first.image.shape[:2] if first is not None else (32, 32)
    scale = max(1, -(-64 // max(height, width)))  # small images drawn at 64 px or more
    th, tw = height * scale, width * scale
    gap, band = max(4, tw // 10), int(0.5 * th)  # between tiles; room for two caption lines
    left = int(2.4 * tw) if any(caption for caption, _ in rows) else 0
    canvas = np.ones((len(rows) * (band + th + gap), left + columns * (tw + gap), 3), np.float32)
    inches = 1.25 / tw  # a tile is 1.25 in wide, so 8-point captions fit above it
    fig = plt.figure(figsize=(canvas.shape[1] * inches, canvas.shape[0] * inches + 0.45))
    ax = fig.add_axes((0, 0, 1, canvas.shape[0] * inches / (canvas.shape[0] * inches + 0.45)))
    for r, (caption, tiles) in enumerate(rows):
        top = r * (band + th + gap) + band
        if caption:
            ax.text(6, top + th / 2, caption, ha="left", va="center", fontsize=9)
        for c, tile in enumerate(tiles[:columns]):
            x = left + c * (tw + gap)
            canvas[top : top + th, x : x + tw] = _pixels(tile, scale)
            ax.text(x + tw / 2, top - 3, tile.title, ha="center", va="bottom", fontsize=8,
                    color=tile.color, linespacing=1.1)  # fmt: skip
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=11, y=1 - 0.12 / (canvas.shape[0] * inches + 0.45))
    return save_figure(fig, path)


def plot_tiles(tiles: Sequence[Tile], path: Path, title: str, columns: int = 8) -> Path:
    """A grid of images, ``columns`` to a row, each with its caption (two lines at most)."""
    rows = [(None, tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    return plot_grid(rows, path, title, columns)


def plot_pairs(rows: Sequence[tuple[str, Sequence[Tile]]], path: Path) -> Path:
    """One row per confused pair: its caption on the left, example images beside it."""
    columns = max(len(tiles) for _, tiles in rows)
    title = "Most confused class pairs (true \u2192 predicted), most confident examples"
    return plot_grid(rows, path, title, columns)


def plot_runs(
    runs: Sequence[tuple[str, dict[str, list[float]], dict[str, Any] | None]],
    path: Path,
    against: str,
) -> Path:
    """Accuracy and loss of every run ``(label, history, test metrics)`` on one chart each:
    validation solid (where there is a validation split), training dashed, the final test
    accuracy as a star; against epochs or against the wall-clock time of training
    (``against``: "epoch" or "time")."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.6))
    # Seconds since training began at the end of each epoch (validation included).
    walls = [np.cumsum(history.get("epoch_seconds", [])) for _, history, _ in runs]
    longest = max((w[-1] for w in walls if len(w)), default=0.0)
    minutes = against == "time" and longest > 600
    for i, ((label, history, test), wall) in enumerate(zip(runs, walls, strict=True)):
        color = f"C{i % 10}"
        x = np.arange(1, len(history.get("loss", [])) + 1, dtype=float)
        if against == "time":
            x = wall / (60 if minutes else 1)
            if len(x) != len(history.get("loss", [])):
                continue  # a history without epoch times
        for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
            if metric in history:
                ax.plot(x, history[metric], ls="--", color=color, alpha=0.7,
                        label=f"{label} training")  # fmt: skip
            if f"val_{metric}" in history:
                ax.plot(x, history[f"val_{metric}"], color=color, label=f"{label} validation")
        if test and len(x):
            axes[0].plot(x[-1], test["accuracy"], "*", ms=13, color=color, mec="black",
                         label=f"{label} test {test['accuracy']:.2%}")  # fmt: skip
            axes[1].plot(x[-1], test["loss"], "*", ms=13, color=color, mec="black",
                         label=f"{label} test")  # fmt: skip
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


def plot_samples(
    rows: Sequence[tuple[str, Sequence[np.ndarray]]], path: Path, title: str, columns: int
) -> Path:
    """One row of images per class, its caption (the class and its count) on the left."""
    return plot_grid([(caption, [Tile(image, "") for image in images]) for caption, images in rows],
                     path, title, columns)  # fmt: skip


def plot_study_history(
    points: Sequence[tuple[int, float | None, str]], monitor: str, direction: str, path: Path
) -> Path:
    """A tuning study's trials ``(number, value, state)`` in order: complete trials as dots,
    pruned ones as crosses at their last reported value, the best so far as a step line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    done = [(n, v) for n, v, s in points if s == "complete" and v is not None]
    pruned = [(n, v) for n, v, s in points if s == "pruned" and v is not None]
    if done:
        ax.plot(*zip(*done, strict=True), "o", color="tab:blue", label="complete")
        best = np.maximum.accumulate if direction == "maximize" else np.minimum.accumulate
        numbers, values = zip(*done, strict=True)
        ax.step(numbers, best(np.array(values)), where="post", color="tab:red", label="best so far")
    if pruned:
        ax.plot(*zip(*pruned, strict=True), "x", color="grey", label="pruned (last value)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are numbered
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{monitor} (validation)")
    ax.set_title("Optimisation history")
    ax.grid(alpha=0.3)
    if done or pruned:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished trial yet", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_importances(importances: dict[str, float], path: Path) -> Path:
    """Each searched parameter's share of the objective's variation, largest on top."""
    plt = pyplot()
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7.2, 0.5 * len(items) + 1.4))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=9)
    ax.set_xlabel("importance (share of the objective's variation)")
    ax.set_xlim(0, max(1.0, max(v for _, v in items) * 1.15))
    ax.set_title("Parameter importances")
    fig.tight_layout()
    return save_figure(fig, path)
