"""Calibrated probabilities: the temperature fit, the layer that carries it, the held-out split it
is fitted on, the numbers and curves of the report, and "unsure" answers below a confidence.

Whole runs are checked where they already train: the shared digits run (predict, serve, export,
report), tests/test_checkpoint.py (a resumed run's temperature), tests/test_budget.py (the fast
recipe's calibration split)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from cnnkit import analysis
from cnnkit.calibration import (
    apply_temperature,
    brier_score,
    calibrate,
    fit_temperature,
    negative_log_likelihood,
)
from cnnkit.runs import Run
from conftest import cli


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _known(temperature: float, n: int = 20_000, classes: int = 10, seed: int = 0) -> tuple:
    """Labels drawn from softmax(z), and a model that reports softmax(z * temperature): its
    logits are the true ones times ``temperature``, so dividing them by it calibrates it."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, (n, classes))
    truth = _softmax(z)
    labels = (truth.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).clip(0, classes - 1)
    return _softmax(z * temperature), labels, truth


@pytest.mark.parametrize("temperature", [0.4, 1.0, 2.5])
def test_the_fit_recovers_a_known_temperature(temperature: float) -> None:
    model, labels, truth = _known(temperature)
    fitted = fit_temperature(model, labels)
    assert abs(fitted / temperature - 1) < 0.03, fitted
    # Calibrated, the model's probabilities are the true ones again, and its NLL falls to theirs.
    np.testing.assert_allclose(apply_temperature(model, fitted), truth, atol=0.02)
    record = calibrate(model, labels, "validation split")
    assert record.temperature == fitted  # deterministic, bit for bit
    assert record.nll_after <= record.nll_before + 1e-12
    assert abs(record.nll_after - negative_log_likelihood(truth, labels)) < 0.01
    if temperature != 1.0:  # a mis-calibrated model is measurably worse before
        assert record.nll_before > record.nll_after + 0.01
        before = analysis.calibration(model, labels).ece
        after = analysis.calibration(apply_temperature(model, fitted), labels).ece
        assert after < 0.015 < before


def test_temperature_keeps_every_prediction() -> None:
    model, _, _ = _known(0.5, n=2000)
    for t in (0.1, 0.7, 3.0, 50.0):
        calibrated = apply_temperature(model, t)
        assert np.array_equal(calibrated.argmax(axis=1), model.argmax(axis=1))
        np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(apply_temperature(model, 1.0), model, atol=1e-12)


def test_brier_score_by_hand() -> None:
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    # right and sure: 0; half and half: 0.25 + 0.25; wrong and sure: 1 + 1.
    assert math.isclose(brier_score(p, np.array([0, 0, 0])), (0 + 0.5 + 2) / 3)


def test_accuracy_against_coverage_and_thresholds_by_hand() -> None:
    # Confidences 0.9, 0.8, 0.8, 0.6, 0.55 (the two 0.8s answered together); right, right,
    # wrong, right, wrong.
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    labels = np.array([0, 0, 0, 0, 0])
    curve = analysis.accuracy_coverage(p, labels)
    assert curve.coverage == [0.2, 0.6, 0.8, 1.0]
    np.testing.assert_allclose(curve.accuracy, [1.0, 2 / 3, 3 / 4, 3 / 5])
    assert curve.threshold == [0.9, 0.8, 0.6, 0.55]
    best = analysis.threshold_for(p, labels, 0.99)
    assert best is not None and (best.threshold, best.coverage, best.accuracy) == (0.9, 0.2, 1.0)
    wider = analysis.threshold_for(p, labels, 0.7)
    assert wider is not None and (wider.threshold, wider.coverage) == (0.6, 0.8)
    assert analysis.threshold_for(np.array([[0.3, 0.7]]), np.array([0]), 0.5) is None


def test_vector_scaling_is_kept_only_where_it_beats_the_temperature() -> None:
    """A network that favours some classes: vector scaling (an offset per class) corrects it
    and wins on held-out folds; a network that is only over-confident keeps its temperature."""
    rng = np.random.default_rng(1)
    n, classes = 4000, 10
    z = rng.normal(0.0, 3.0, (n, classes))
    labels = (_softmax(z).cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).clip(0, classes - 1)
    favour = np.linspace(-2.0, 2.0, classes)  # the network adds this to the true logits
    biased = calibrate(_softmax(z + favour), labels, "validation split")
    assert biased.method == "vector" and biased.folds is not None
    assert biased.folds["vector"] < biased.folds["temperature"] * 0.99
    assert np.corrcoef(biased.bias, favour)[0, 1] < -0.9  # the offsets undo the favour
    assert biased.nll_after < negative_log_likelihood(apply_temperature(
        _softmax(z + favour), biased.temperature), labels)  # fmt: skip
    plain = calibrate(_softmax(z * 2.0), labels, "validation split")
    assert plain.method == "temperature" and plain.folds is not None
    np.testing.assert_allclose(plain.scale, 1 / plain.temperature)
    assert plain.bias == [0.0] * classes
    few = calibrate(_softmax(z[:150] + favour), labels[:150], "calibration split")
    assert few.method == "temperature" and few.folds is None  # under 20 images a class: not tried


def test_the_layer_is_the_formula_and_survives_saving(tmp_path: Path) -> None:
    import keras

    from cnnkit.calibration import apply_scaling
    from cnnkit.models.calibration import calibration_of, with_calibration
    from cnnkit.runs import load_model

    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Flatten()(inputs)
    net = keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))
    images = np.random.default_rng(0).normal(0, 4, (64, 4, 4, 1)).astype("float32")
    raw = np.asarray(net.predict(images, verbose=0), np.float64)
    scale, bias = [2.7, 1.0, 0.5, 3.0, 1.2], [0.0, -1.0, 0.5, 0.25, 0.0]
    path = tmp_path / "m.keras"
    with_calibration(net, scale, bias).save(path)
    loaded = load_model(path)  # safe mode, in the way every verb loads a run's model
    assert calibration_of(loaded) == (scale, bias) and calibration_of(net) is None
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), apply_scaling(raw, scale, bias), atol=2e-6
    )
    # A temperature is the special case: equal scales, no bias.
    np.testing.assert_allclose(
        apply_scaling(raw, [1 / 0.37] * 5, [0.0] * 5), apply_temperature(raw, 0.37), atol=1e-12
    )


def test_the_calibration_split_is_stratified_seeded_and_only_where_needed() -> None:
    from cnnkit.config import DataConfig
    from cnnkit.data import load_dataset

    cfg = DataConfig(name="digits", val_split=0.0, calibration_split=0.1)
    data = load_dataset(cfg, seed=3, calibrate=True)
    assert data.val is None and data.held_out is not None and data.calibration is data.held_out
    whole = load_dataset(cfg, seed=3)  # not calibrating: every training image trains
    assert len(data.train) + len(data.held_out) == len(whole.train)
    assert len(data.held_out) == math.ceil(0.1 * len(whole.train))
    counts = np.bincount(data.held_out.y)
    assert len(counts) == 10 and counts.max() - counts.min() <= 1  # ten classes, evenly
    again = load_dataset(cfg, seed=3, calibrate=True)  # seeded: resume gets the same split
    assert np.array_equal(again.held_out.y, data.held_out.y)
    assert np.array_equal(again.held_out.x, data.held_out.x)
    assert data.summary()["calibration"] == len(data.held_out)
    with_val = load_dataset(DataConfig(name="digits"), seed=3, calibrate=True)
    assert with_val.held_out is None and with_val.calibration is with_val.val
    tiny = load_dataset(
        DataConfig(name="digits", val_split=0.0, train_subset=20, calibration_split=0.5),
        seed=0, calibrate=True,
    )  # fmt: skip
    assert tiny.held_out is not None and len(tiny.held_out) == 10  # one of each class
    too_tiny = load_dataset(
        DataConfig(name="digits", val_split=0.0, train_subset=10), seed=0, calibrate=True
    )
    assert too_tiny.held_out is None and len(too_tiny.train) == 10


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "x"])
def test_min_confidence_outside_0_1_is_one_line(value: str, tmp_path: Path) -> None:
    result = cli("predict", str(tmp_path / "no-run"), "a.png", "--min-confidence", value)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--min-confidence" in lines[0], result.stderr


@pytest.mark.slow
def test_a_calibrated_run_end_to_end(digits_run: Path, tmp_path: Path) -> None:
    """The shared digits run: the calibration in run.json, metrics.json and the model; the
    numbers before and after; the report's sections; "unsure" answers from predict."""
    from cnnkit.calibration import apply_scaling
    from cnnkit.models.calibration import calibration_of

    run = Run(digits_run)
    fitted = run.meta()["calibration"]
    assert fitted["source"] == "validation split" and fitted["images"] == len(
        run.prediction_arrays()["held_out_labels"]
    )
    model = run.load_model()
    assert calibration_of(model) == (fitted["scale"], fitted["bias"])
    assert fitted["temperature"] != 1.0 and fitted["method"] in ("temperature", "vector")
    metrics = run.metrics()
    assert metrics["calibration"] == fitted
    arrays = run.prediction_arrays()
    # The saved probabilities are the network's own, calibrated; the scores follow from them.
    np.testing.assert_allclose(
        arrays["probabilities"],
        apply_scaling(arrays["uncalibrated"], fitted["scale"], fitted["bias"]), atol=1e-6,
    )  # fmt: skip
    labels = arrays["labels"]
    for scores, probabilities in ((metrics["test"], arrays["probabilities"]),
                                  (metrics["uncalibrated"], arrays["uncalibrated"])):  # fmt: skip
        assert math.isclose(scores["brier"], brier_score(probabilities, labels), abs_tol=1e-5)
        assert math.isclose(scores["ece"], analysis.calibration(probabilities, labels).ece,
                            abs_tol=1e-5)  # fmt: skip
    if fitted["method"] == "temperature":  # a temperature keeps every prediction
        assert metrics["test"]["accuracy"] == metrics["uncalibrated"]["accuracy"]
    # The temperature minimises the held-out NLL: any other does worse there.
    held, held_labels = arrays["held_out_probabilities"], arrays["held_out_labels"]
    best = negative_log_likelihood(apply_temperature(held, fitted["temperature"]), held_labels)
    for factor in (0.9, 1.1):
        other = apply_temperature(held, fitted["temperature"] * factor)
        assert negative_log_likelihood(other, held_labels) > best
    assert negative_log_likelihood(apply_scaling(held, fitted["scale"], fitted["bias"]),
                                   held_labels) == pytest.approx(fitted["nll_after"])  # fmt: skip

    numbers = run.report_numbers()
    assert numbers["calibration_before"]["ece"] == pytest.approx(metrics["uncalibrated"]["ece"])
    assert numbers["operating_points"] and numbers["coverage"]["coverage"][-1] == 1.0
    page = run.report_path.read_text()
    for text in ("Accuracy against coverage", "network&#x27;s own", f"{fitted['temperature']:.4f}",
                 "--min-confidence", f"{fitted['nll_after']:.4f}"):  # fmt: skip
        assert text in page, text

    # predict --min-confidence: "unsure" where the top probability is below it, else the class.
    from PIL import Image

    from cnnkit.config import DataConfig
    from cnnkit.data import load_dataset

    test = load_dataset(DataConfig(name="digits"), seed=0).test
    paths = []
    for i in range(8):
        paths.append(tmp_path / f"d{i}.png")
        Image.fromarray(test.x[i, :, :, 0]).save(paths[-1])
    plain = json.loads(cli("predict", str(digits_run), *map(str, paths), "--json").stdout)
    confidences = sorted(a["top"][0]["probability"] for a in plain)
    middle = (confidences[3] + confidences[4]) / 2
    answers = json.loads(
        cli("predict", str(digits_run), *map(str, paths), "--json", "--min-confidence",
            str(middle)).stdout
    )  # fmt: skip
    assert [a["unsure"] for a in answers] == [a["top"][0]["probability"] < middle for a in plain]
    assert sum(a["unsure"] for a in answers) == 4
    for a in answers:
        assert a["class"] == (None if a["unsure"] else a["top"][0]["class"])
    table = cli("predict", str(digits_run), *map(str, paths[:8]), "--min-confidence", str(middle))
    assert table.returncode == 0 and table.stdout.count(" unsure ") == 4


@pytest.mark.slow
def test_calibrate_false_keeps_the_networks_own(digits_run: Path, tmp_path: Path) -> None:
    """train.calibrate=false: no temperature anywhere, and training on every training image."""
    from cnnkit.models.calibration import calibration_of

    result = cli(
        "train", "--preset", "smoke", "--runs-dir", str(tmp_path), "data.name=digits",
        "train.epochs=1", "train.calibrate=false", "data.val_split=0", "report.enabled=false",
        "name=raw",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = Run(tmp_path / "raw")
    assert run.meta()["calibration"] is None and "calibration" not in run.metrics()
    assert calibration_of(run.load_model()) is None
    assert "uncalibrated" not in run.prediction_arrays()
    assert run.meta()["dataset"]["train"] == 1437 and "calibration" not in run.meta()["dataset"]
    shutil.rmtree(run.path)
