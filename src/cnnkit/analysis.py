"""The numbers behind the report's pictures, from saved predictions: calibration, accuracy against
coverage, the most confused class pairs, the most confident mistakes, where over-fitting starts.

Plain numpy on ``probabilities (N, classes)`` and integer ``labels (N,)``; figures.py only draws
what these return, and tests check them on cases worked out by hand.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ECE_BINS = 15  # Guo et al. 2017, "On Calibration of Modern Neural Networks"


@dataclass(frozen=True)
class Calibration:
    """Confidence (the top probability) against accuracy, in equal-width bins over [0, 1]."""

    ece: float  # expected calibration error: sum over bins of share * |accuracy - confidence|
    overconfidence: float  # mean confidence minus accuracy: > 0 over-confident, < 0 under-confident
    edges: list[float]  # bins+1 edges; bin i holds confidences in (edges[i], edges[i+1]]
    confidence: list[float]  # mean confidence per bin (nan where a bin is empty)
    accuracy: list[float]  # share of correct predictions per bin (nan where empty)
    count: list[int]

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("confidence", "accuracy"):  # JSON has no NaN
            values[key] = [None if math.isnan(v) else v for v in values[key]]
        return values


def calibration(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> Calibration:
    """Expected calibration error and the reliability diagram's bins."""
    confidence = probabilities.max(axis=1).astype(np.float64)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins, as in Guo et al.: a confidence of exactly 0.2 belongs to (0.133, 0.2].
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    confidence_sum = np.bincount(index, weights=confidence, minlength=bins)
    correct_sum = np.bincount(index, weights=correct, minlength=bins)
    ece = float(np.abs(correct_sum - confidence_sum).sum() / max(len(labels), 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.where(count > 0, confidence_sum / count, np.nan)
        accuracy = np.where(count > 0, correct_sum / count, np.nan)
    return Calibration(
        ece=ece,
        overconfidence=float(confidence.mean() - correct.mean()) if len(labels) else 0.0,
        edges=[float(e) for e in edges],
        confidence=[float(v) for v in mean_confidence],
        accuracy=[float(v) for v in accuracy],
        count=[int(c) for c in count],
    )


@dataclass(frozen=True)
class Coverage:
    """Accuracy on the images the model is most sure of: with the images sorted by confidence,
    highest first, answering only the first ``coverage`` share of them gives ``accuracy``, and
    ``threshold`` is the lowest confidence among those answered."""

    coverage: list[float]
    accuracy: list[float]
    threshold: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ranked(probabilities: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidences sorted highest first, and the running accuracy over them."""
    confidence = probabilities.max(axis=1).astype(np.float64)
    correct = probabilities.argmax(axis=1) == labels
    order = np.argsort(-confidence, kind="stable")
    running = np.cumsum(correct[order]) / np.arange(1, len(labels) + 1)
    return confidence[order], running


def _cuts(confidence: np.ndarray) -> np.ndarray:
    """The answered counts a confidence threshold can make: images of equal confidence are
    answered together, so a cut falls only where the next confidence is lower."""
    n = len(confidence)
    return (
        np.flatnonzero(np.append(confidence[1:] < confidence[:-1], True)) + 1 if n else confidence
    )


def accuracy_coverage(probabilities: np.ndarray, labels: np.ndarray, points: int = 100) -> Coverage:
    """The accuracy-against-coverage curve at up to ``points`` coverages (every threshold a
    confidence can make, thinned evenly)."""
    confidence, running = _ranked(probabilities, labels)
    cuts = _cuts(confidence)
    if len(cuts) > points:
        cuts = cuts[np.unique(np.linspace(0, len(cuts) - 1, points).round().astype(int))]
    n = max(len(labels), 1)
    return Coverage(
        coverage=[float(k / n) for k in cuts],
        accuracy=[float(running[k - 1]) for k in cuts],
        threshold=[float(confidence[k - 1]) for k in cuts],
    )


@dataclass(frozen=True)
class Operating:
    """A confidence threshold and what answering only at or above it gives."""

    target: float  # the accuracy asked for
    threshold: float  # answer when the top probability is at least this, else "unsure"
    coverage: float  # share of the images answered
    accuracy: float  # accuracy on them


def threshold_for(probabilities: np.ndarray, labels: np.ndarray, target: float) -> Operating | None:
    """The lowest confidence threshold whose answered images are at least ``target`` accurate
    (the largest share answered), or None when even the most confident answers miss it."""
    confidence, running = _ranked(probabilities, labels)
    cuts = _cuts(confidence)
    good = cuts[running[cuts - 1] >= target] if len(cuts) else cuts
    if not len(good):
        return None
    k = int(good.max())
    return Operating(target, float(confidence[k - 1]), k / len(labels), float(running[k - 1]))


@dataclass(frozen=True)
class ConfusedPair:
    true: int
    predicted: int
    count: int
    share: float  # of the true class's test images


def confused_pairs(confusion: np.ndarray | list[list[int]], k: int = 5) -> list[ConfusedPair]:
    """The ``k`` largest off-diagonal cells of the confusion matrix (true class, predicted class),
    largest first; ties in the order of the matrix (row, then column). Empty cells never count."""
    counts = np.asarray(confusion, dtype=np.int64)
    off = counts.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    totals = counts.sum(axis=1)
    pairs = []
    for cell in flat:
        true, predicted = divmod(int(cell), counts.shape[1])
        if off[true, predicted] == 0:
            break
        pairs.append(
            ConfusedPair(
                true,
                predicted,
                int(off[true, predicted]),
                float(off[true, predicted] / totals[true]),
            )
        )
    return pairs


def most_confident_wrong(probabilities: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` wrong predictions made with the highest confidence, highest first
    (ties by index)."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:k]]


def mistakes(
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    files: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Every wrong prediction, most confident first: the image's index (and file, where the
    split has file names), its class, the prediction, and both probabilities."""
    order = most_confident_wrong(probabilities, labels, len(labels))
    predicted = probabilities.argmax(axis=1)
    return [
        {
            "index": int(i),
            **({"file": files[i]} if files is not None else {}),
            "true": class_names[labels[i]],
            "predicted": class_names[predicted[i]],
            "confidence": round(float(probabilities[i, predicted[i]]), 6),
            "true_probability": round(float(probabilities[i, labels[i]]), 6),
        }
        for i in order.tolist()
    ]


def pair_examples(
    probabilities: np.ndarray, labels: np.ndarray, pair: ConfusedPair, k: int
) -> np.ndarray:
    """Up to ``k`` images of ``pair.true`` predicted as ``pair.predicted``, most confident first."""
    predicted = probabilities.argmax(axis=1)
    chosen = np.flatnonzero((labels == pair.true) & (predicted == pair.predicted))
    confidence = probabilities[chosen, pair.predicted]
    return chosen[np.argsort(-confidence, kind="stable")[:k]]


def sample_indices(n: int, k: int, seed: int = 0) -> np.ndarray:
    """``k`` distinct indices out of ``n``, drawn with ``seed`` (the same grid every time), sorted."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(k, n), replace=False))


def overfitting_start(history: dict[str, list[float]], patience: int = 2) -> int | None:
    """The 1-based epoch from which the model over-fits, or None.

    That is the epoch after validation loss reached its minimum, when at least ``patience``
    epochs follow the minimum, none of them gets back below it, and the training loss over them
    still fell: the model goes on fitting the training set while it gets worse on unseen images.
    """
    val = np.asarray(history.get("val_loss", []), dtype=np.float64)
    train = np.asarray(history.get("loss", []), dtype=np.float64)
    if len(val) < patience + 1 or len(train) != len(val) or not np.isfinite(val).all():
        return None
    best = int(np.argmin(val))
    if len(val) - 1 - best < patience:
        return None
    if not train[-1] < train[best]:
        return None
    return best + 2  # 0-based best -> 1-based, and the epoch after it
