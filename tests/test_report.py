"""The report: the numbers behind each picture (by hand), the heatmaps, the pictures and the page
as a browser shows it, for 2 classes and for 100; then `cnnkit report` and `cnnkit compare`."""

from __future__ import annotations

import json
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
from conftest import cli, last_line, run_cli

PNG = b"\x89PNG\r\n\x1a\n"


# --- numbers -----------------------------------------------------------------------------------


def test_expected_calibration_error_by_hand() -> None:
    # Top probabilities 0.9 (right), 0.6 (wrong), 0.55 (right), 0.35 (wrong); 5 bins of 0.2.
    probabilities = np.array(
        [[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.25, 0.55, 0.2], [0.35, 0.33, 0.32]]
    )
    labels = np.array([0, 1, 1, 2])
    result = analysis.calibration(probabilities, labels, bins=5)
    # 0.6 lies in (0.4, 0.6] with 0.55: bins are closed on the right.
    assert result.count == [0, 1, 2, 0, 1]
    assert math.isclose(result.confidence[2], 0.575) and result.accuracy[2] == 0.5
    assert math.isnan(result.accuracy[0])
    # |0 - 0.35| * 1/4 + |0.5 - 0.575| * 2/4 + |1 - 0.9| * 1/4
    assert math.isclose(result.ece, 0.15)
    # Mean confidence (0.9 + 0.6 + 0.55 + 0.35) / 4 = 0.6 against accuracy 0.5.
    assert math.isclose(result.overconfidence, 0.1)
    assert math.isclose(score(probabilities, Split(np.zeros((4, 1, 1, 1), np.uint8), labels),
                              list("abc")).ece, analysis.calibration(probabilities, labels).ece)  # fmt: skip
    sure = np.eye(3)[[0, 1, 2, 1]]
    assert analysis.calibration(sure, np.array([0, 1, 2, 1])).ece == 0.0
    assert math.isclose(analysis.calibration(sure, np.array([1, 1, 2, 1])).ece, 0.25)
    # NaN bins become null, so report.json stays valid JSON (json.dumps would write NaN).
    strict = json.dumps(result.to_dict(), allow_nan=False)
    assert json.loads(strict)["accuracy"][0] is None


def test_confused_pairs_by_hand() -> None:
    confusion = [[5, 2, 0], [3, 4, 2], [0, 0, 6]]
    pairs = analysis.confused_pairs(confusion, k=5)
    # Largest first; the tie between (0, 1) and (1, 2) goes to the earlier row; zeros never count.
    assert [(p.true, p.predicted, p.count) for p in pairs] == [(1, 0, 3), (0, 1, 2), (1, 2, 2)]
    assert math.isclose(pairs[0].share, 3 / 9)
    assert analysis.confused_pairs(np.diag([3, 4]), k=5) == []


def test_most_confident_mistakes_and_pair_examples() -> None:
    probabilities = np.array(
        [[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]]
    )
    labels = np.array([0, 0, 0, 1, 0, 1, 0])
    # Wrong: 1 (0.8), 2 (0.7), 3 (0.6), 4 (0.9), 5 (0.7), 6 (0.7); ties keep index order.
    assert analysis.most_confident_wrong(probabilities, labels, 4).tolist() == [4, 1, 2, 5]
    assert analysis.most_confident_wrong(probabilities, labels, 100).tolist() == [4, 1, 2, 5, 6, 3]
    pair = analysis.ConfusedPair(true=0, predicted=1, count=4, share=0.8)
    assert analysis.pair_examples(probabilities, labels, pair, 3).tolist() == [4, 1, 2]
    assert analysis.most_confident_wrong(np.eye(2), np.array([0, 1]), 5).tolist() == []
    sample = analysis.sample_indices(100, 24, seed=0)
    assert len(set(sample.tolist())) == 24 and sample.tolist() == sorted(sample.tolist())
    assert np.array_equal(sample, analysis.sample_indices(100, 24, seed=0))


@pytest.mark.parametrize(
    ("val_loss", "loss", "expected"),
    [
        ([1.0, 0.8, 0.6, 0.7, 0.9, 1.1], [1.0, 0.8, 0.6, 0.5, 0.4, 0.3], 4),  # min at epoch 3
        ([1.0, 0.8, 0.6, 0.5, 0.45, 0.4], [1.0, 0.8, 0.6, 0.5, 0.4, 0.3], None),  # still improving
        (
            [1.0, 0.8, 0.6, 0.5, 0.4, 0.45],
            [1.0, 0.8, 0.6, 0.5, 0.4, 0.3],
            None,
        ),  # one epoch: noise?
        ([1.0, 0.6, 0.7, 0.8], [1.0, 0.8, 0.9, 1.0], None),  # training got worse too: not that
    ],
)
def test_overfitting_start(val_loss: list[float], loss: list[float], expected: int | None) -> None:
    assert analysis.overfitting_start({"val_loss": val_loss, "loss": loss}) == expected
    assert analysis.overfitting_start({"loss": loss}) is None  # no validation split


# --- heatmaps ----------------------------------------------------------------------------------


def _evidence_model(keras: object) -> object:
    """A network whose evidence for class 0 is exactly the image's brightness: a 1x1
    convolution copies the pixel (channel 0) or its negative (channel 1), averaged, then scored."""
    layers = keras.layers  # type: ignore[attr-defined]
    inputs = keras.Input((8, 8, 1))  # type: ignore[attr-defined]
    x = layers.Conv2D(2, 1, use_bias=False, activation="relu", name="features",
                      kernel_initializer=keras.initializers.Constant([[[[1.0, -1.0]]]]))(inputs)  # type: ignore[attr-defined]  # fmt: skip
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(2, activation="softmax", kernel_initializer="identity")(x)
    return keras.Model(inputs, outputs)  # type: ignore[attr-defined]


def test_gradcam_points_at_the_evidence() -> None:
    import keras

    from cnnkit.explain import class_activation_maps

    images = np.zeros((2, 8, 8, 1), np.uint8)
    images[0, 1:3, 5:7] = 200  # a bright square top right
    images[1, 4:8, 0:2] = 90  # a dim bar bottom left
    images[1, 5, 1] = 180
    maps, layer = class_activation_maps(_evidence_model(keras), images, np.array([0, 0]))
    assert layer == "features" and maps.shape == (2, 8, 8)
    # For class 0 all weight is on channel 0, the pixel itself: the map is the image, scaled to 1.
    expected = images[..., 0] / images[..., 0].max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(maps, expected, atol=1e-5)


def test_gradcam_finds_the_feature_map_inside_a_backbone() -> None:
    import keras

    from cnnkit.explain import class_activation_maps, feature_layer

    layers = keras.layers
    inner_in = keras.Input((16, 16, 3))
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="inner_conv")(inner_in)
    backbone = keras.Model(inner_in, layers.GlobalAveragePooling2D()(h), name="backbone")
    inputs = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(backbone(x)))
    layer, nested = feature_layer(model)
    assert layer.name == "inner_conv" and nested is backbone
    images = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    maps, name = class_activation_maps(model, images, np.array([0, 1, 2]))
    assert name == "inner_conv" and maps.shape == (3, 16, 16)
    assert maps.min() >= 0 and maps.max() <= 1


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


@pytest.mark.slow
def test_compare_two_runs_and_tensorboard(digits_run: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    other = cli("train", "--preset", "smoke", "--runs-dir", str(runs), "data.name=digits",
                "train.epochs=3", "augment.flip=false", "name=short",
                "train.tensorboard=true", "report.enabled=false")  # fmt: skip
    short = last_line(other)
    assert not (short / "report.html").exists()  # report.enabled=false
    events = list((short / "tensorboard").rglob("events.out.tfevents.*"))
    assert {p.parent.name for p in events} == {"train", "validation"}

    done = run_cli("compare", str(digits_run), str(short), "--out", str(tmp_path / "cmp"))
    assert done.returncode == 0, done.stderr  # the verb as a real process
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "model", "status"]
    assert any(line.startswith("digits ") for line in lines)
    assert any(line.startswith("short ") for line in lines)
    assert any(line.startswith("train.epochs") and "15" in line and "3" in line for line in lines)
    folder = tmp_path / "cmp"
    assert lines[-1] == str(folder / "compare.html")
    saved = json.loads((folder / "compare.json").read_text())
    assert [r["run"] for r in saved["runs"]] == ["digits", "short"]
    assert saved["config_differences"]["train.epochs"] == [15, 3]
    for name in ("curves_by_epoch.png", "curves_by_time.png"):
        assert (folder / name).read_bytes()[:8] == PNG
    page = open_page(folder / "compare.html", screenshot="compare.png")
    assert page.problems == [] and page.images == 2
    # A second comparison never overwrites the first.
    again = cli("compare", str(digits_run), str(short), "--out", str(folder))
    assert again.stdout.splitlines()[-1] == str(tmp_path / "cmp-2" / "compare.html")
    for args, message in (
        ([str(short)], "two or more"),
        ([str(short), str(short)], "twice"),
        ([str(short), str(tmp_path)], "not a cnnkit run"),
    ):
        bad = cli("compare", *args)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
