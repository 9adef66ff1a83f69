"""Calibrated probabilities: temperature (or vector) scaling fitted on held-out images, and the
numbers that say how far a model's probabilities are from the truth.

A network's softmax says how sure it is, but rarely truthfully: label smoothing and test-time
augmentation make the fast recipe under-confident (a "0.55" right nine times in ten), long
training makes others over-confident. Temperature scaling (Guo et al., 2017, "On Calibration of
Modern Neural Networks") divides the logits by one number T, fitted by minimising the negative
log-likelihood on images that training never saw. It changes no prediction (the order of the
classes is kept), only how sure each one says it is. Vector scaling gives each class its own
scale and offset (2 x classes numbers): it can also correct a network that favours some classes
(and so change predictions), and with few images it over-fits; :func:`calibrate` keeps it only
where it beats the temperature on held-out folds of the held-out images.

Both act on the logits, recovered from the probabilities: ``log p`` is the logits less a
constant per image, and centring it over the classes removes that constant, so
``c = log p - mean(log p)`` is the logits less their mean. The calibrated probabilities are
``softmax(scale * c + bias)`` (scale ``1/T``, bias 0 for a temperature). Because any constant
per image cancels, the same numbers apply to any model's output, to test-time augmentation's
average (which averages log-probabilities, :func:`cnnkit.predictor.predict_probabilities`) and
inside the saved model (:class:`cnnkit.models.calibration.Calibration`, the same formula as a
final layer).

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
# The negative log-likelihood (the test loss too) floors each image's probability here: the
# clipping Keras applies in its cross-entropy, so that the test loss and the curves' val_loss
# are the same measure, and one impossible answer costs at most 16.1 nats rather than infinity.
NLL_FLOOR = 1e-7
# The temperatures searched (a model this far off would not be worth calibrating).
T_MIN, T_MAX = 0.01, 100.0
# Vector scaling is tried where the held-out images number at least this many per class, and kept
# where its negative log-likelihood over FOLDS held-out folds is lower than the temperature's by
# more than VECTOR_GAIN (relative): it has 2 x classes numbers to fit, the temperature one.
VECTOR_MIN_PER_CLASS = 20
FOLDS = 5
VECTOR_GAIN = 0.01


def log_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """``log p`` as float64: the logits less a constant per image."""
    return np.log(np.clip(np.asarray(probabilities, dtype=np.float64), FLOOR, 1.0))


def centered_logits(probabilities: np.ndarray) -> np.ndarray:
    """``log p - mean(log p)`` over the classes: the logits less their mean, whatever constant
    per image the probabilities were computed with."""
    logp = log_probabilities(probabilities)
    return logp - logp.mean(axis=1, keepdims=True)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    out = np.exp(z)
    return out / out.sum(axis=1, keepdims=True)


def apply_scaling(probabilities: np.ndarray, scale: Any, bias: Any = 0.0) -> np.ndarray:
    """``softmax(scale * c + bias)`` of the centred logits ``c`` (scale and bias: one number,
    or one per class)."""
    return _softmax(centered_logits(probabilities) * np.asarray(scale) + np.asarray(bias))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities of the logits divided by ``temperature`` (``softmax(log(p) / T)``)."""
    return apply_scaling(probabilities, 1.0 / temperature)


def negative_log_likelihood(
    probabilities: np.ndarray, labels: np.ndarray, floor: float = NLL_FLOOR
) -> float:
    """Mean ``-log p(true class)``, each probability floored at ``floor``: with NLL_FLOOR, the
    test loss and the calibration's before and after."""
    p_true = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    # (+ 0.0: a perfect score is 0, not -0)
    return float(-np.mean(np.log(np.clip(p_true, floor, 1.0)))) + 0.0 if len(labels) else 0.0


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

    logits = centered_logits(probabilities)
    labels = np.asarray(labels, dtype=np.int64)
    true = logits[np.arange(len(labels)), labels]

    def nll(log_t: float) -> float:
        inverse = math.exp(-log_t)
        return float(np.mean(logsumexp(logits * inverse, axis=1) - true * inverse))

    found = minimize_scalar(
        nll, bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded",
        options={"xatol": 1e-7},
    )  # fmt: skip
    return float(math.exp(found.x))


def fit_vector(
    probabilities: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class scale and bias of the centred logits minimising the negative log-likelihood
    (vector scaling), by L-BFGS from the temperature's (scale ``1/T``, bias 0)."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    logits = centered_logits(probabilities)
    labels = np.asarray(labels, dtype=np.int64)
    classes, rows = logits.shape[1], np.arange(len(labels))

    def nll(theta: np.ndarray) -> tuple[float, np.ndarray]:
        logq = log_softmax(logits * theta[:classes] + theta[classes:], axis=1)
        grad = np.exp(logq)
        grad[rows, labels] -= 1.0
        grad /= len(labels)
        value = float(-logq[rows, labels].mean())
        return value, np.concatenate([(grad * logits).sum(axis=0), grad.sum(axis=0)])

    start = np.concatenate([np.full(classes, 1.0 / temperature), np.zeros(classes)])
    found = minimize(nll, start, jac=True, method="L-BFGS-B")
    return found.x[:classes], found.x[classes:]


@dataclass(frozen=True)
class Fitted:
    """A fitted calibration and what it did on the images it was fitted on."""

    method: str  # "temperature" or "vector"
    temperature: float  # the temperature fitted (the whole calibration when method is temperature)
    scale: list[float]  # per class, on the centred logits (1/T each for a temperature)
    bias: list[float]  # per class (0 each for a temperature)
    images: int  # held-out images it was fitted on
    source: str  # "validation split" or "calibration split"
    nll_before: float  # their negative log-likelihood before and after
    nll_after: float
    # Each method's negative log-likelihood on held-out folds (where vector scaling was tried).
    folds: dict[str, float] | None = None

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """Calibrated probabilities from the network's own."""
        return apply_scaling(probabilities, self.scale, self.bias)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibrate(probabilities: np.ndarray, labels: np.ndarray, source: str) -> Fitted:
    """Fit a temperature on held-out ``probabilities`` (uncalibrated) and their ``labels``; where
    there are enough images, also vector scaling, kept only if it beats the temperature on
    held-out folds (:data:`VECTOR_GAIN`). Deterministic."""
    labels = np.asarray(labels, dtype=np.int64)
    classes = probabilities.shape[1]
    temperature = fit_temperature(probabilities, labels)
    method, scale, bias = "temperature", np.full(classes, 1.0 / temperature), np.zeros(classes)
    folds = None
    counts = np.bincount(labels, minlength=classes)
    if counts.min() >= VECTOR_MIN_PER_CLASS:
        folds = _cross_validated(probabilities, labels)
        if folds["vector"] < folds["temperature"] * (1 - VECTOR_GAIN):
            method = "vector"
            scale, bias = fit_vector(probabilities, labels, temperature)
    after = apply_scaling(probabilities, scale, bias)
    return Fitted(
        method=method,
        temperature=temperature,
        scale=[float(v) for v in scale],
        bias=[float(v) for v in bias],
        images=len(labels),
        source=source,
        nll_before=negative_log_likelihood(probabilities, labels),
        nll_after=negative_log_likelihood(after, labels),
        folds=folds,
    )


def _cross_validated(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Each method's negative log-likelihood on FOLDS stratified folds, fitted on the rest."""
    from sklearn.model_selection import StratifiedKFold

    totals = {"temperature": 0.0, "vector": 0.0}
    splits = StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(probabilities, labels)
    for fit, held in splits:
        t = fit_temperature(probabilities[fit], labels[fit])
        scale, bias = fit_vector(probabilities[fit], labels[fit], t)
        for name, calibrated in (
            ("temperature", apply_temperature(probabilities[held], t)),
            ("vector", apply_scaling(probabilities[held], scale, bias)),
        ):
            # At FLOOR, not NLL_FLOOR: the fits minimise the exact NLL, so the two are compared
            # on that, not on the reported (floored) measure.
            nll = negative_log_likelihood(calibrated, labels[held], floor=FLOOR)
            totals[name] += nll * len(held)
    return {name: total / len(labels) for name, total in totals.items()}
