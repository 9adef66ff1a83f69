"""cnnkit.analysis: the numbers behind the report's pictures, each checked by hand (calibration
error, confused pairs, most confident mistakes, where over-fitting starts)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cnnkit import analysis
from cnnkit.data.base import Split
from cnnkit.metrics import score


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
