"""cnnkit.reporter: the pictures and the page as a browser shows them, for 2 classes and for
100; then `cnnkit report` (the numbers behind the pictures: test_analysis.py; the heatmaps:
test_explain.py)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from browser import open_page
from cnnkit import analysis
from cnnkit.config import Config
from cnnkit.data.base import Split
from cnnkit.metrics import score
from cnnkit.runs import Run
from conftest import cli, run_cli

PNG = b"\x89PNG\r\n\x1a\n"


# --- pictures and page -------------------------------------------------------------------------


def _fake_run(
    folder: Path, classes: int, n: int, seed: int = 0
) -> tuple[Run, object, np.ndarray, Split]:
    """A run folder as train leaves it (without training): config, run.json, history, metrics."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    run = Run(folder)
    names = [f"class_{i:03d}" for i in range(classes)]
    labels = np.arange(n) % classes
    logits = rng.normal(size=(n, classes)) + 3.0 * np.eye(classes)[labels] * rng.random((n, 1))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    split = Split(rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8), labels)
    run.write_config(Config())
    run.write_env({"python": "3", "cpu": {"cores": 2}})
    run.update_meta(name=folder.name, status="complete", classes=names, model="seed_cnn",
                    dataset={"name": "synthetic"}, epochs=6, kept="best", best_epoch=3,
                    train_seconds=12.5, train_images_per_second=800.0)  # fmt: skip
    run.write_history({
        "accuracy": [0.3 + 0.1 * e for e in range(6)], "epoch_seconds": [2.0] * 6,
        "loss": [1.5 - 0.2 * e for e in range(6)], "val_accuracy": [0.3 + 0.05 * e for e in range(6)],
        "val_loss": [1.4, 1.2, 1.1, 1.15, 1.2, 1.3],
    })  # fmt: skip
    return run, score(probabilities, split, names), probabilities, split


def _tiny_cnn(classes: int) -> object:
    import keras

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))


@pytest.mark.parametrize("classes", [2, 100])
def test_report_pictures_and_page(tmp_path: Path, classes: int) -> None:
    from cnnkit.reporter import write_report

    folder = tmp_path / f"run{classes}"
    run, result, probabilities, split = _fake_run(folder, classes, n=600)
    written = write_report(run, result, probabilities, split.y, split.x, _tiny_cnn(classes))
    expected = {"accuracy", "loss", "per_class", "confusion", "confusion_normalized", "pairs",
                "wrong", "sample", "reliability", "coverage", "gradcam"}  # fmt: skip
    assert set(written.figures) == expected, written.notes
    for path in written.figures.values():
        assert path.parent == folder / "figures"
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000, path
    numbers = run.report_numbers()
    assert numbers["best_epoch"] == 3 and numbers["overfitting_epoch"] == 4
    assert math.isclose(numbers["calibration"]["ece"], result.ece)
    top = analysis.confused_pairs(result.confusion, 1)[0]
    assert numbers["confused_pairs"][0]["count"] == top.count
    wrong = numbers["most_confident_wrong"]
    predicted = probabilities.argmax(axis=1)
    assert all(predicted[i] != split.y[i] for i in wrong)
    assert probabilities[wrong[0]].max() == probabilities[predicted != split.y].max(axis=1).max()

    page = open_page(folder / "report.html", screenshot=f"report-{classes}-classes.png")
    assert page.problems == []
    assert page.images == len(expected)  # every picture is in the page, and loaded
    for heading in ("Training curves", "Confusion matrix", "Most confident mistakes",
                    "Calibration", "Grad-CAM", "config.yaml"):  # fmt: skip
        assert heading in page.text
    assert f"{result.accuracy:.2%}" in page.text
    assert "http" not in (folder / "report.html").read_text()  # nothing fetched from a network


def test_report_without_predictions_images_or_model(tmp_path: Path) -> None:
    """What can be drawn is drawn, and the page says what is missing."""
    from cnnkit.reporter import write_report

    folder = tmp_path / "bare"
    run, result, probabilities, split = _fake_run(folder, 3, n=60)
    run.file("history.csv").unlink()
    written = write_report(run, result, None, None)
    assert set(written.figures) == {"per_class", "confusion", "confusion_normalized"}
    assert any("no saved test predictions" in note for note in written.notes)
    no_model = write_report(run, result, probabilities, split.y, split.x, model=None)
    assert "gradcam" not in no_model.figures and "wrong" in no_model.figures
    import keras

    layers = keras.layers
    dense = keras.Sequential(
        [keras.Input((16, 16, 3)), layers.Flatten(), layers.Dense(3, activation="softmax")]
    )
    flat = write_report(run, result, probabilities, split.y, split.x, dense)
    assert any("class-activation maps not drawn" in n and "no convolutional feature map" in n
               for n in flat.notes)  # fmt: skip
    assert open_page(folder / "report.html").problems == []


# --- the verbs ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_report_verb_redraws_a_run(digits_run: Path, tmp_path: Path) -> None:
    run = Run(tmp_path / "digits")
    shutil.copytree(digits_run, run.path)
    saved = run.predictions()
    assert saved is not None
    shutil.rmtree(run.figures)
    for name in ("report.html", "report.json", "predictions.npz"):
        run.file(name).unlink()
    result = run_cli("report", str(run.path))  # the verb as a real process
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("s)") and "11 figures" in result.stdout
    # No predictions saved: made again with the run's model, and equal to those of training.
    again = run.predictions()
    assert again is not None
    np.testing.assert_allclose(again[0], saved[0], atol=1e-6)
    assert np.array_equal(again[1], saved[1])
    metrics = run.metrics()["test"]
    numbers = run.report_numbers()
    assert math.isclose(numbers["calibration"]["ece"], metrics["ece"], abs_tol=1e-6)
    assert numbers["gradcam"]["layer"] == "conv3_2"  # the tutorial CNN's last convolution
    assert len(list(run.figures.glob("*.png"))) == 11
    page = open_page(run.report_path, screenshot="report-digits.png")
    assert page.problems == [] and page.images == 11
    bad = cli("report", str(run.path), "train.epochs=3")
    assert bad.returncode == 2 and "data.* overrides only" in bad.stderr
    missing = cli("report", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
