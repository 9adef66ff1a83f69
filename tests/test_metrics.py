from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cnnkit.data.base import Split
from cnnkit.figures import plot_confusion, plot_curve
from cnnkit.metrics import EvalResult, classification_report, score
from cnnkit.runs import Run


def _case() -> tuple[np.ndarray, Split]:
    # Four images, three classes; worked out by hand below.
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    y = np.array([0, 1, 1, 2])
    return probabilities, Split(np.zeros((4, 2, 2, 3), np.uint8), y)


def test_scores_by_hand() -> None:
    probabilities, split = _case()
    result = score(probabilities, split, ["a", "b", "c"])
    assert result.accuracy == 0.75
    assert math.isclose(
        result.loss, -(math.log(0.7) + math.log(0.8) + math.log(0.3) + math.log(0.6)) / 4
    )
    assert result.confusion == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    # Class a: predicted twice, right once -> precision 0.5, recall 1.
    assert result.precision == [0.5, 1.0, 1.0]
    assert result.recall == [1.0, 0.5, 1.0]
    assert math.isclose(result.f1[0], 2 / 3) and math.isclose(result.f1[1], 2 / 3)
    assert result.support == [1, 2, 1]
    assert EvalResult.from_dict(result.to_dict()) == result


def test_classification_report_matches_the_numbers() -> None:
    probabilities, split = _case()
    text = classification_report(score(probabilities, split, ["ant", "bee", "cow"]))
    assert "ant" in text and "bee" in text and "0.7500" in text  # accuracy row


def test_plots_are_written(tmp_path: Path) -> None:
    probabilities, split = _case()
    result = score(probabilities, split, ["a", "b", "c"])
    run = Run(tmp_path)
    run.write_history({"accuracy": [0.5, 0.6], "loss": [1.2, 1.0], "val_accuracy": [0.4, 0.5],
                       "val_loss": [1.3, 1.1]})  # fmt: skip
    assert run.file("history.csv").read_text().splitlines()[:2] == [
        "epoch,accuracy,loss,val_accuracy,val_loss",
        "0,0.5,1.2,0.4,1.3",
    ]
    history = run.history()
    assert history["val_loss"] == [1.3, 1.1] and history["epoch"] == [0.0, 1.0]
    for path in (
        plot_curve(history, "accuracy", tmp_path / "a.png", "Accuracy"),
        plot_confusion(result, tmp_path / "c.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
