"""cnnkit.metrics: the test scores by hand, and scikit-learn's report rebuilt from the confusion matrix."""

from __future__ import annotations

import math

import numpy as np

from cnnkit.data.base import Split
from cnnkit.metrics import EvalResult, classification_report, score


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
