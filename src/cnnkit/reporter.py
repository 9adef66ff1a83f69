"""The report of a run: which pictures, of which images, make its page; and ``report(run)``,
which draws it again from what the run saved.

    run/report.html        self-contained: every picture embedded, no network, no script
    run/report.json        the numbers behind the pictures (calibration bins, pairs, chosen images)
    run/figures/*.png      each picture alone, for a paper or a slide
    run/predictions.npz    the test set's probabilities and labels (written by train)

Nothing here computes a metric or draws: metrics.py and analysis.py give the numbers,
explain.py the heatmaps, figures.py draws them and pages.py lays out the page.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit import analysis, figures
from cnnkit.figures import Tile
from cnnkit.metrics import EvalResult
from cnnkit.runs import CONFIG_FILE, Run, open_run

GALLERY = 24  # images in the gallery of mistakes and in the random grid
PAIRS = 5  # most confused class pairs shown
PAIR_EXAMPLES = 6  # images per pair
CAM_IMAGES = 4  # heatmaps over this many correct and this many wrong images
# Accuracies the report finds a confidence threshold for (answer at or above it, else "unsure").
TARGETS = (0.95, 0.98, 0.99)


@dataclass
class Report:
    """A written report: the page, its pictures, the numbers behind them, what was left out."""

    path: Path  # report.html
    figures: dict[str, Path]
    numbers: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def report(run: Run | str | Path, overrides: Iterable[str] = ()) -> Report:
    """Draw ``run``'s report page again from what the run saved (``cnnkit report``).

    The test images (for the galleries and the heatmaps) are read from the run's data; where
    that is not on this machine (``data.*`` overrides say where it is), the page is drawn without
    them and says so. Test predictions come from predictions.npz, or are made once and saved.
    """
    from cnnkit.config import with_data_overrides
    from cnnkit.data import load_dataset
    from cnnkit.errors import CnnkitError, ConfigError
    from cnnkit.predictor import predict_probabilities

    run = open_run(run)
    result = EvalResult.from_dict(run.metrics()["test"])
    config = with_data_overrides(run.config(), overrides, "report")
    notes: list[str] = []
    test = None
    try:
        data = load_dataset(config.data, config.seed)
        if list(data.class_names) != run.class_names:
            raise ConfigError(f"its classes {list(data.class_names)} differ from the run's")
        test = data.test
    except CnnkitError as exc:
        notes.append(
            f"test images not shown: the run's data could not be read ({exc}); "
            f"give its place with data.path=... to include them"
        )
    saved = run.prediction_arrays()  # read once: the test set's, and the network's own
    probabilities, labels = saved.get("probabilities"), saved.get("labels")
    if test is not None and labels is not None and not np.array_equal(labels, test.y):
        notes.append(
            "test images not shown: the data read now is not the test set the run was "
            "evaluated on (its labels differ)"
        )
        test = None
    model = None
    if test is not None:
        model = run.load_model()
        if probabilities is None:  # a run from before predictions were saved: predict once
            probabilities = predict_probabilities(
                model, test.x, config.train.eval_batch_size, config.train.tta
            )
            labels = test.y
            run.write_predictions(probabilities, labels)
    return write_report(
        run, result, probabilities, labels, None if test is None else test.x, model, notes,
        saved.get("uncalibrated"),
    )  # fmt: skip


def write_report(
    run: Run,
    result: EvalResult,
    probabilities: np.ndarray | None,
    labels: np.ndarray | None,
    images: Any = None,
    model: Any = None,
    notes: Sequence[str] = (),
    uncalibrated: np.ndarray | None = None,
) -> Report:
    """Draw every picture into ``run``'s figures folder and write report.html and report.json.

    ``probabilities``/``labels``: the test set's predictions (None: only what metrics.json and
    history.csv give). ``images``: the test images, indexable by an index array (None: no image
    galleries). ``model``: for the class-activation maps (None: none). ``uncalibrated``: the
    network's own test probabilities, for a calibrated run (the reliability before and after).
    """
    start = time.perf_counter()
    folder = run.figures
    folder.mkdir(exist_ok=True)
    meta = run.meta()
    notes = list(notes)
    drawn: dict[str, Path] = {}
    numbers: dict[str, Any] = {"test": result.scores()}
    names = result.class_names

    history = run.history()
    best_epoch = meta.get("best_epoch") if meta.get("kept") == "best" else None
    overfit = analysis.overfitting_start(history)
    numbers["best_epoch"], numbers["overfitting_epoch"] = best_epoch, overfit
    if history:
        for metric, title in (("accuracy", "Accuracy per epoch"), ("loss", "Loss per epoch")):
            drawn[metric] = figures.plot_curve(history, metric, folder / f"{metric}.png", title,
                                               best_epoch, overfit)  # fmt: skip
        if "val_loss" not in history:
            notes.append("no validation split: no best checkpoint or over-fitting to mark")
    drawn["per_class"] = figures.plot_per_class(result, folder / "per_class.png")
    drawn["confusion"] = figures.plot_confusion(result, folder / "confusion_matrix.png")
    drawn["confusion_normalized"] = figures.plot_confusion(
        result, folder / "confusion_matrix_normalized.png", normalized=True
    )
    pairs = analysis.confused_pairs(result.confusion, PAIRS)
    numbers["confused_pairs"] = [
        {"true": names[p.true], "predicted": names[p.predicted], "count": p.count,
         "share_of_true": p.share} for p in pairs
    ]  # fmt: skip

    if probabilities is not None and labels is not None:
        calibration = analysis.calibration(probabilities, labels)
        numbers["calibration"] = calibration.to_dict()
        before = None
        if uncalibrated is not None:
            before = analysis.calibration(uncalibrated, labels)
            numbers["calibration_before"] = before.to_dict()
            saved = _saved_metrics(run)
            if "uncalibrated" in saved:
                numbers["uncalibrated"] = saved["uncalibrated"]
        drawn["reliability"] = figures.plot_reliability(
            calibration, folder / "reliability.png", before
        )
        coverage = analysis.accuracy_coverage(probabilities, labels)
        points = [analysis.threshold_for(probabilities, labels, t) for t in TARGETS]
        operating = [p for p in points if p is not None]
        numbers["coverage"] = coverage.to_dict()
        numbers["operating_points"] = [asdict(p) for p in operating]
        drawn["coverage"] = figures.plot_coverage(coverage, operating, folder / "coverage.png")
        if images is not None:
            pictures, chosen = _galleries(folder, probabilities, labels, images, names, pairs)
            drawn.update(pictures)
            numbers["most_confident_wrong"] = chosen["most_confident_wrong"]
            numbers["random_sample"] = chosen["random_sample"]
            files = run.files("test")
            if files is not None and len(files) == len(labels):  # name the images by file
                numbers["mistakes"] = analysis.mistakes(probabilities, labels, names, files)[
                    :GALLERY
                ]
                numbers["random_sample_files"] = [files[i] for i in chosen["random_sample"]]
            for record, examples in zip(numbers["confused_pairs"], chosen["pair_examples"],
                                        strict=True):  # fmt: skip
                record["examples"] = examples
            if model is not None:
                try:
                    drawn["gradcam"], numbers["gradcam"] = _gradcam(
                        folder, model, probabilities, labels, images, names
                    )
                except Exception as exc:  # the rest of the report stands
                    notes.append(f"class-activation maps not drawn: {exc}")
            else:
                notes.append("class-activation maps not drawn: no model given")
    else:
        notes.append("no saved test predictions: calibration and image galleries left out")

    seconds = time.perf_counter() - start
    numbers["notes"] = notes
    numbers["seconds"] = round(seconds, 2)
    from cnnkit.pages import report_page

    config_file = run.file(CONFIG_FILE)
    config_text = config_file.read_text(encoding="utf-8") if config_file.is_file() else ""
    page = report_page(
        run.path, meta, result, drawn, numbers, notes, config_text, run.env(), CAM_IMAGES
    )
    path = run.write_report(numbers, page)
    return Report(path, drawn, numbers, notes, time.perf_counter() - start)


def _saved_metrics(run: Run) -> dict[str, Any]:
    from cnnkit.errors import RunError

    try:
        return run.metrics()
    except RunError:
        return {}


def _galleries(
    folder: Path,
    probabilities: np.ndarray,
    labels: np.ndarray,
    images: Any,
    names: list[str],
    pairs: list[analysis.ConfusedPair],
) -> tuple[dict[str, Path], dict[str, Any]]:
    """The galleries' pictures, and which test images each shows (their indices)."""
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

    drawn: dict[str, Path] = {}
    wrong = analysis.most_confident_wrong(probabilities, labels, GALLERY)
    if len(wrong):
        drawn["wrong"] = figures.plot_tiles(
            tiles(wrong, wrong_in_red=False), folder / "most_confident_mistakes.png",
            "Most confident mistakes (true class, prediction and its probability)",
        )  # fmt: skip
    sample = analysis.sample_indices(len(labels), GALLERY, seed=0)
    drawn["sample"] = figures.plot_tiles(
        tiles(sample), folder / "random_predictions.png",
        "Random test images (green: right, red: wrong)",
    )  # fmt: skip
    rows, examples = [], []
    for pair in pairs:
        chosen = analysis.pair_examples(probabilities, labels, pair, PAIR_EXAMPLES)
        examples.append(chosen.tolist())
        caption = (f"{names[pair.true]} \u2192 {names[pair.predicted]}\n{pair.count} "
                   f"image{'s' if pair.count > 1 else ''} ({pair.share:.1%} of {names[pair.true]})")  # fmt: skip
        row = [Tile(t.image, t.title.split("\n")[1], "black") for t in tiles(chosen)]
        rows.append((caption, row))
    if rows:
        drawn["pairs"] = figures.plot_pairs(rows, folder / "confused_pairs.png")
    chosen_images = {"most_confident_wrong": wrong.tolist(), "random_sample": sample.tolist(),
                     "pair_examples": examples}  # fmt: skip
    return drawn, chosen_images


def _gradcam(
    folder: Path,
    model: Any,
    probabilities: np.ndarray,
    labels: np.ndarray,
    images: Any,
    names: list[str],
) -> tuple[Path, dict[str, Any]]:
    """The Grad-CAM picture over CAM_IMAGES right and CAM_IMAGES wrong test images, and which
    images and layer it shows."""
    from cnnkit.explain import class_activation_maps

    predicted = probabilities.argmax(axis=1)
    sample = analysis.sample_indices(len(labels), 200, seed=1)
    right = sample[predicted[sample] == labels[sample]][:CAM_IMAGES]
    wrong = analysis.most_confident_wrong(probabilities, labels, CAM_IMAGES)
    chosen = np.concatenate([right, wrong]).astype(np.int64)
    pixels = _read(images, chosen)
    maps, layer = class_activation_maps(model, pixels, predicted[chosen])
    tiles = []
    for k, i in enumerate(chosen.tolist()):
        ok = predicted[i] == labels[i]
        caption = f"true: {names[labels[i]]}\npred: {names[predicted[i]]}"
        tiles.append(Tile(pixels[k], caption, "tab:green" if ok else "tab:red"))
    for k, i in enumerate(chosen.tolist()):
        tiles.append(Tile(pixels[k], f"evidence for\n{names[predicted[i]]}", "black", maps[k]))
    path = figures.plot_tiles(
        tiles, folder / "gradcam.png",
        f"Grad-CAM at layer {layer!r}: where the evidence for the predicted class lies",
        columns=len(chosen),
    )  # fmt: skip
    shown = {"layer": layer, "images": chosen.tolist(),
             "classes": [names[c] for c in predicted[chosen]]}  # fmt: skip
    return path, shown


def _read(images: Any, indices: np.ndarray) -> np.ndarray:
    """``images[indices]`` in the order given, read in ascending order (images on disk are then
    read front to back, each once)."""
    order = np.argsort(indices, kind="stable")
    pixels = np.empty((len(indices), *images.shape[1:]), dtype=np.uint8)
    pixels[order] = np.asarray(images[indices[order]])
    return pixels
