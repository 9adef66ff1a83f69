"""The report: pictures drawn from saved numbers, and one page that holds them all.

    run/report.html        self-contained: every picture embedded, no network, no script
    run/report.json        the numbers behind the pictures (calibration bins, pairs, chosen images)
    run/figures/*.png      each picture alone, for a paper or a slide
    run/predictions.npz    the test set's probabilities and labels (written by train)

Nothing here computes a metric: evaluate (metrics.py) and analysis.py give the numbers, and
explain.py the heatmaps; this module only draws them and writes the page.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit import analysis
from cnnkit.metrics import EvalResult

REPORT_FILE = "report.html"
REPORT_JSON = "report.json"
FIGURES = "figures"
PREDICTIONS_FILE = "predictions.npz"
GALLERY = 24  # images in the gallery of mistakes and in the random grid
PAIRS = 5  # most confused class pairs shown
PAIR_EXAMPLES = 6  # images per pair
CAM_IMAGES = 4  # heatmaps over this many correct and this many wrong images
DPI = 120


# ---------------------------------------------------------------------------------------------
# Saved numbers


def read_history(path: Path) -> dict[str, list[float]]:
    """history.csv (one row per epoch) as columns of floats."""
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


def save_predictions(path: Path, probabilities: np.ndarray, labels: np.ndarray) -> None:
    """The test set's probabilities (float32) and labels, written atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        np.savez(f, probabilities=probabilities.astype(np.float32), labels=labels.astype(np.int32))
    tmp.replace(path)


def load_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as saved:
        return saved["probabilities"].astype(np.float64), saved["labels"].astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Pictures


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    plt = pyplot()
    fig.savefig(path, dpi=DPI)
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


def plot_reliability(calibration: analysis.Calibration, path: Path) -> Path:
    """Reliability diagram: accuracy against confidence per bin, and how many images each bin has."""
    plt = pyplot()
    edges = np.asarray(calibration.edges)
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    accuracy = np.nan_to_num(np.asarray(calibration.accuracy, dtype=float))
    confidence = np.asarray(calibration.confidence, dtype=float)
    fig, (ax, below) = plt.subplots(
        2, 1, figsize=(5.6, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
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
    ax.set_title(f"Reliability (expected calibration error {calibration.ece:.2%})")
    ax.legend(fontsize=9, loc="upper left")
    ax.grid(alpha=0.3)
    below.bar(centers, calibration.count, width=width * 0.95, color="tab:grey")
    below.set_ylabel("images")
    below.set_xlabel("confidence (top probability)")
    below.grid(alpha=0.3)
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
    first = next(t for _, tiles in rows for t in tiles)
    height, width = first.image.shape[:2]
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


# ---------------------------------------------------------------------------------------------
# The report


@dataclass
class Report:
    path: Path  # report.html
    figures: dict[str, Path]
    numbers: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def write_report(
    run_path: Path,
    result: EvalResult,
    probabilities: np.ndarray | None,
    labels: np.ndarray | None,
    images: Any = None,
    model: Any = None,
    notes: Sequence[str] = (),
) -> Report:
    """Draw every picture into ``run_path/figures`` and write report.html and report.json.

    ``probabilities``/``labels``: the test set's predictions (None: only what metrics.json and
    history.csv give). ``images``: the test images, indexable by an index array (None: no image
    galleries). ``model``: for the class-activation maps (None: none).
    """
    start = time.perf_counter()
    figures_dir = run_path / FIGURES
    figures_dir.mkdir(exist_ok=True)
    meta = _read_json(run_path / "run.json")
    notes = list(notes)
    figures: dict[str, Path] = {}
    numbers: dict[str, Any] = {"test": result.scores()}
    names = result.class_names

    history_file = run_path / "history.csv"
    history = read_history(history_file) if history_file.is_file() else {}
    best_epoch = meta.get("best_epoch") if meta.get("kept") == "best" else None
    overfit = analysis.overfitting_start(history)
    numbers["best_epoch"], numbers["overfitting_epoch"] = best_epoch, overfit
    if history:
        for metric, title in (("accuracy", "Accuracy per epoch"), ("loss", "Loss per epoch")):
            figures[metric] = plot_curve(history, metric, figures_dir / f"{metric}.png", title,
                                         best_epoch, overfit)  # fmt: skip
        if "val_loss" not in history:
            notes.append("no validation split: no best checkpoint or over-fitting to mark")
    figures["per_class"] = plot_per_class(result, figures_dir / "per_class.png")
    figures["confusion"] = plot_confusion(result, figures_dir / "confusion_matrix.png")
    figures["confusion_normalized"] = plot_confusion(
        result, figures_dir / "confusion_matrix_normalized.png", normalized=True
    )
    pairs = analysis.confused_pairs(result.confusion, PAIRS)
    numbers["confused_pairs"] = [
        {"true": names[p.true], "predicted": names[p.predicted], "count": p.count,
         "share_of_true": p.share} for p in pairs
    ]  # fmt: skip

    if probabilities is not None and labels is not None:
        calibration = analysis.calibration(probabilities, labels)
        numbers["calibration"] = calibration.to_dict()
        figures["reliability"] = plot_reliability(calibration, figures_dir / "reliability.png")
        if images is not None:
            figures.update(
                _galleries(figures_dir, probabilities, labels, images, names, pairs, numbers)
            )
            if model is not None:
                try:
                    figures["gradcam"] = _gradcam(figures_dir, model, probabilities, labels,
                                                  images, names, numbers)  # fmt: skip
                except Exception as exc:  # the rest of the report stands
                    notes.append(f"class-activation maps not drawn: {exc}")
            else:
                notes.append("class-activation maps not drawn: no model given")
    else:
        notes.append("no saved test predictions: calibration and image galleries left out")

    seconds = time.perf_counter() - start
    numbers["notes"] = notes
    numbers["seconds"] = round(seconds, 2)
    from cnnkit.runs import write_json, write_text

    write_json(run_path / REPORT_JSON, numbers)
    page = _page(run_path, meta, result, figures, numbers, notes)
    write_text(run_path / REPORT_FILE, page)
    return Report(run_path / REPORT_FILE, figures, numbers, notes, time.perf_counter() - start)


def _galleries(
    folder: Path,
    probabilities: np.ndarray,
    labels: np.ndarray,
    images: Any,
    names: list[str],
    pairs: list[analysis.ConfusedPair],
    numbers: dict[str, Any],
) -> dict[str, Path]:
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)

    def tiles(indices: np.ndarray, wrong_in_red: bool = True) -> list[Tile]:
        out = []
        for i, pixels in zip(indices.tolist(), _read(images, indices), strict=True):
            right = predicted[i] == labels[i]
            title = f"true: {names[labels[i]]}\npred: {names[predicted[i]]} {confidence[i]:.0%}"
            color = "tab:green" if right else ("tab:red" if wrong_in_red else "black")
            out.append(Tile(pixels, title, color))
        return out

    figures: dict[str, Path] = {}
    wrong = analysis.most_confident_wrong(probabilities, labels, GALLERY)
    numbers["most_confident_wrong"] = wrong.tolist()
    if len(wrong):
        figures["wrong"] = plot_tiles(
            tiles(wrong, wrong_in_red=False), folder / "most_confident_mistakes.png",
            "Most confident mistakes (true class, prediction and its probability)",
        )  # fmt: skip
    sample = analysis.sample_indices(len(labels), GALLERY, seed=0)
    numbers["random_sample"] = sample.tolist()
    figures["sample"] = plot_tiles(
        tiles(sample), folder / "random_predictions.png",
        "Random test images (green: right, red: wrong)",
    )  # fmt: skip
    rows = []
    numbers_pairs = numbers["confused_pairs"]
    for pair, record in zip(pairs, numbers_pairs, strict=True):
        chosen = analysis.pair_examples(probabilities, labels, pair, PAIR_EXAMPLES)
        record["examples"] = chosen.tolist()
        caption = (f"{names[pair.true]} \u2192 {names[pair.predicted]}\n{pair.count} "
                   f"image{'s' if pair.count > 1 else ''} ({pair.share:.1%} of {names[pair.true]})")  # fmt: skip
        row = [Tile(t.image, t.title.split("\n")[1], "black") for t in tiles(chosen)]
        rows.append((caption, row))
    if rows:
        figures["pairs"] = plot_pairs(rows, folder / "confused_pairs.png")
    return figures


def _gradcam(
    folder: Path,
    model: Any,
    probabilities: np.ndarray,
    labels: np.ndarray,
    images: Any,
    names: list[str],
    numbers: dict[str, Any],
) -> Path:
    from cnnkit.explain import class_activation_maps

    predicted = probabilities.argmax(axis=1)
    sample = analysis.sample_indices(len(labels), 200, seed=1)
    right = sample[predicted[sample] == labels[sample]][:CAM_IMAGES]
    wrong = analysis.most_confident_wrong(probabilities, labels, CAM_IMAGES)
    chosen = np.concatenate([right, wrong]).astype(np.int64)
    pixels = _read(images, chosen)
    maps, layer = class_activation_maps(model, pixels, predicted[chosen])
    numbers["gradcam"] = {"layer": layer, "images": chosen.tolist(),
                          "classes": [names[c] for c in predicted[chosen]]}  # fmt: skip
    tiles = []
    for k, i in enumerate(chosen.tolist()):
        ok = predicted[i] == labels[i]
        caption = f"true: {names[labels[i]]}\npred: {names[predicted[i]]}"
        tiles.append(Tile(pixels[k], caption, "tab:green" if ok else "tab:red"))
    for k, i in enumerate(chosen.tolist()):
        tiles.append(Tile(pixels[k], f"evidence for\n{names[predicted[i]]}", "black", maps[k]))
    return plot_tiles(
        tiles, folder / "gradcam.png",
        f"Grad-CAM at layer {layer!r}: where the evidence for the predicted class lies",
        columns=len(chosen),
    )  # fmt: skip


def _leaning(overconfidence: float) -> str:
    points = abs(overconfidence) * 100
    if points < 1:
        return "On average its confidence matches its accuracy (within 1 point)."
    if overconfidence > 0:
        return f"The model is over-confident: its mean confidence is {points:.1f} points above its accuracy."
    return (
        f"The model is under-confident: its accuracy is {points:.1f} points above its mean "
        f"confidence (label smoothing, for one, trains a model to be so)."
    )


def _read(images: Any, indices: np.ndarray) -> np.ndarray:
    """``images[indices]`` in the order given, read in ascending order (images on disk are then
    read front to back, each once)."""
    order = np.argsort(indices, kind="stable")
    pixels = np.empty((len(indices), *images.shape[1:]), dtype=np.uint8)
    pixels[order] = np.asarray(images[indices[order]])
    return pixels


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------------------------------------
# The page


STYLE = """
body{font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 32px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#c7cdd9}
nav{padding:8px 32px;background:#fff;border-bottom:1px solid #e2e5ea;font-size:14px}
nav a{margin-right:14px;color:#2456b3;text-decoration:none}
main{max-width:1200px;margin:0 auto;padding:8px 32px 48px}
section{background:#fff;border:1px solid #e2e5ea;border-radius:8px;padding:12px 20px;margin:18px 0}
h2{font-size:18px;margin:6px 0 10px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{border:1px solid #e2e5ea;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:20px} .card span{color:#5b6475;font-size:13px}
img{max-width:100%;height:auto;display:block;margin:8px 0}
.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start} .row img{max-width:560px}
table{border-collapse:collapse;font-size:13px} td,th{padding:3px 10px;border-bottom:1px solid #eceef2;text-align:right}
th{background:#f0f2f5} td:first-child,th:first-child{text-align:left}
pre{background:#f0f2f5;padding:10px;border-radius:6px;overflow:auto;font-size:12px}
.note{color:#8a5300;background:#fff6e5;border:1px solid #f2d9a6;border-radius:6px;padding:6px 10px;margin:6px 0}
details summary{cursor:pointer;color:#2456b3}
"""


def embed_png(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _flat(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _flat(v, f"{prefix}{k}.")]
    return [(prefix.rstrip("."), json.dumps(value) if isinstance(value, list) else str(value))]


def _page(
    run_path: Path,
    meta: dict[str, Any],
    result: EvalResult,
    figures: dict[str, Path],
    numbers: dict[str, Any],
    notes: list[str],
) -> str:
    esc = html.escape
    name = meta.get("name", run_path.name)
    dataset = meta.get("dataset") or {}
    calibration = numbers.get("calibration") or {}
    cards = [
        (f"{result.accuracy:.2%}", "test accuracy"),
        (f"{result.loss:.4f}", "test loss"),
        (f"{result.macro_f1:.3f}", "macro F1"),
        (f"{calibration['ece']:.2%}" if calibration else "n/a", "calibration error (ECE)"),
        (str(result.num_images), "test images"),
        (str(meta.get("epochs", "?")), "epochs"),
        (f"{meta.get('train_seconds', 0):.0f} s", "training time"),
        (f"{meta.get('train_images_per_second', 0):.0f}", "training images/s"),
    ]
    sections = []

    def section(anchor: str, title: str, body: str) -> None:
        sections.append(
            (anchor, title, f'<section id="{anchor}"><h2>{esc(title)}</h2>{body}</section>')
        )

    section("summary", "Summary", '<div class="cards">' + "".join(
        f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for v, k in cards
    ) + "</div>" + "".join(f'<p class="note">{esc(n)}</p>' for n in notes))  # fmt: skip

    curves = ""
    if "accuracy" in figures:
        marks = []
        if numbers.get("best_epoch"):
            marks.append(f"the kept (best) checkpoint is from epoch {numbers['best_epoch']}")
        if numbers.get("overfitting_epoch"):
            marks.append(
                f"over-fitting starts at epoch {numbers['overfitting_epoch']}: validation loss "
                f"was lowest the epoch before and training loss went on falling"
            )
        curves = (f"<p>{esc('; '.join(marks).capitalize())}.</p>" if marks else "") + (
            f'<div class="row">{embed_png(figures.get("accuracy"), "accuracy per epoch")}'
            f"{embed_png(figures.get('loss'), 'loss per epoch')}</div>"
        )
        section("curves", "Training curves", curves)

    per_class_rows = [
        (r["class"], f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", r["support"])
        for r in result.per_class()
    ]
    section("classes", "Per-class precision, recall and F1",
            embed_png(figures.get("per_class"), "per-class scores")
            + "<details><summary>the table</summary>"
            + html_table(("class", "precision", "recall", "F1", "images"), per_class_rows)
            + "</details>")  # fmt: skip
    section("confusion", "Confusion matrix",
            f'<div class="row">{embed_png(figures.get("confusion"), "confusion matrix, counts")}'
            f'{embed_png(figures.get("confusion_normalized"), "confusion matrix, row-normalised")}</div>')  # fmt: skip
    pair_rows = [(p["true"], p["predicted"], p["count"], f"{p['share_of_true']:.1%}")
                 for p in numbers.get("confused_pairs", [])]  # fmt: skip
    section("pairs", "Most confused class pairs",
            html_table(("true class", "predicted as", "images", "share of true class"), pair_rows)
            + embed_png(figures.get("pairs"), "examples of the most confused pairs"))  # fmt: skip
    if "wrong" in figures:
        section(
            "mistakes",
            "Most confident mistakes",
            embed_png(figures["wrong"], "most confident mistakes"),
        )
    if "sample" in figures:
        section(
            "sample",
            "Random test predictions",
            embed_png(figures["sample"], "random test predictions"),
        )
    if "reliability" in figures:
        section("calibration", "Calibration",
                f"<p>Expected calibration error {calibration['ece']:.2%} over "
                f"{len(calibration['count'])} equal-width confidence bins: how far the model's "
                f"confidence is from its accuracy, weighted by the images in each bin. "
                f"{_leaning(calibration['overconfidence'])}</p>"
                + embed_png(figures["reliability"], "reliability diagram"))  # fmt: skip
    if "gradcam" in figures:
        section("gradcam", "Class-activation maps (Grad-CAM)",
                f"<p>Top row: {CAM_IMAGES} correctly and {CAM_IMAGES} wrongly classified test "
                f"images; bottom row: where the evidence for the predicted class lies, from layer "
                f"<code>{esc(numbers['gradcam']['layer'])}</code>.</p>"
                + embed_png(figures["gradcam"], "class-activation maps"))  # fmt: skip
    config_text = (run_path / "config.yaml").read_text(encoding="utf-8") if (
        run_path / "config.yaml").is_file() else ""  # fmt: skip
    env = _read_json(run_path / "env.json")
    run_rows = [(k, v) for k, v in _flat({k: meta[k] for k in (
        "status", "created", "ended", "model", "precision", "backend", "kept", "best_epoch",
        "stopped_early", "train_seconds", "eval_seconds", "peak_rss_mb") if k in meta})]  # fmt: skip
    section("config", "Configuration and environment",
            f"<h3>config.yaml</h3><pre>{esc(config_text)}</pre>"
            + "<h3>run</h3>" + html_table(("key", "value"), run_rows)
            + "<h3>environment</h3>" + html_table(("key", "value"), _flat(env)))  # fmt: skip

    nav = "".join(f'<a href="#{a}">{esc(t.split(" (")[0])}</a>' for a, t, _ in sections)
    subtitle = (f"{meta.get('model', '?')} on {dataset.get('name', '?')} "
                f"({len(result.class_names)} classes), run folder {run_path}")  # fmt: skip
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>cnnkit report: {esc(name)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>cnnkit report: {esc(name)}</h1><p>{esc(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{''.join(body for _, _, body in sections)}</main></body></html>\n"
    )
