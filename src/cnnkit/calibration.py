"""Calibrated probabilities: temperature scaling fitted on held-out images, and the numbers that
say how far a model's probabilities are from the truth.

A network's softmax says how sure it is, but rarely truthfully: label smoothing and test-time
augmentation make the fast recipe under-confident (a "0.55" right nine times in ten), long
training makes others over-confident. Temperature scaling (Guo et al., 2017, "On Calibration of
Modern Neural Networks") divides the logits by one number T, fitted by minimising the negative
log-likelihood on images that training never saw. It changes no prediction (the order of the
classes is kept), only how sure each one says it is.

The logits are recovered from the probabilities (``log p`` is the logits less a constant per
image, and the constant cancels in the softmax), so the same T applies to any model's output, to
test-time augmentation's average (which averages log-probabilities, :func:`cnnkit.metrics.
predict_probabilities`) and inside the saved model (:class:`cnnkit.models.calibration.Temperature`,
the same formula as a final layer): ``softmax(log(p) / T)``.

Plain numpy and scipy; nothing here imports Keras.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Probabilities are floored here before their logarithm, in numpy and in the saved model's
# layer alike (float32 holds it as a normal number, so no runtime flushes it to zero).
FLOOR = 1e-30
# The temperatures searched (a model this far off would not be worth calibrating).
T_MIN, T_MAX = 0.01, 100.0


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """``log p`` as float64: the logits less a constant per image."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), FLOOR, 1.0))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)``: the probabilities of the logits divided by ``temperature``."""
    scaled = log_probabilities(probabilities) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    out = np.exp(scaled)
    return out / out.sum(axis=1, keepdims=True)


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean ``-log p(true class)`` (floored at FLOOR: a single impossible answer stays finite)."""
    p_true = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(p_true, FLOOR, 1.0)))) if len(labels) else 0.0


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean over images of the squared distance between the probabilities and the one-hot truth
    (0 is perfect, 2 the worst; the multi-class form of Brier, 1950)."""
    if not len(labels):
        return 0.0
    squared = np.square(np.asarray(probabilities, dtype=np.float64))
    rows = np.arange(len(labels))
    truth = np.asarray(probabilities, dtype=np.float64)[rows, labels]
    # sum_k (p_k - y_k)^2 = sum_k p_k^2 - 2 p_true + 1
    return float(np.mean(squared.sum(axis=1) - 2.0 * truth + 1.0))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels`` under
    ``softmax(log(p) / T)``: a one-dimensional, convex problem in ``1/T``, solved by bounded
    Brent search over ``log T`` in [T_MIN, T_MAX] (deterministic: the same inputs give the same
    temperature, bit for bit)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    logp = log_probabilities(probabilities)
    labels = np.asarray(labels, dtype=np.int64)
    true = logp[np.arange(len(labels)), labels]

    def nll(log_t: float) -> float:
        inverse = math.exp(-log_t)
        return float(np.mean(logsumexp(logp * inverse, axis=1) - true * inverse))

    found = minimize_scalar(
        nll, bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded",
        options={"xatol": 1e-7},
    )  # fmt: skip
    return float(math.exp(found.x))


@dataclass(frozen=True)
class Fitted:
    """A fitted temperature and what it did on the images it was fitted on."""

    temperature: float
    images: int  # held-out images it was fitted on
    source: str  # "validation split" or "calibration split"
    nll_before: float  # their negative log-likelihood before and after
    nll_after: float

    def to_dict(self) -> dict[str, Any]:
        return {"method": "temperature", **asdict(self)}


def calibrate(probabilities: np.ndarray, labels: np.ndarray, source: str) -> Fitted:
    """Fit a temperature on held-out ``probabilities`` (uncalibrated) and their ``labels``."""
    temperature = fit_temperature(probabilities, labels)
    return Fitted(
        temperature=temperature,
        images=len(labels),
        source=source,
        nll_before=negative_log_likelihood(probabilities, labels),
        nll_after=negative_log_likelihood(apply_temperature(probabilities, temperature), labels),
    )
