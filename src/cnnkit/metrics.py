"""Numbers only: test loss and accuracy, per-class precision/recall/F1, the confusion matrix,
calibration error and Brier score."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cnnkit.data.base import Split
from cnnkit.log import printable

_EPS = 1e-7  # the clipping Keras applies in categorical cross-entropy


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    num_images: int
    class_names: list[str]
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    macro_f1: float
    ece: float  # expected calibration error over 15 confidence bins (analysis.calibration)
    brier: float  # multi-class Brier score (calibration.brier_score)
    seconds: float
    images_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scores(self) -> dict[str, Any]:
        """The numbers without the timing: equal for equal predictions (what metrics.json holds)."""
        values = self.to_dict()
        del values["seconds"], values["images_per_second"]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvalResult:
        # Older files lack some numbers.
        timing = {"seconds": 0.0, "images_per_second": 0.0, "ece": float("nan"),
                  "brier": float("nan")}  # fmt: skip
        return cls(**{k: values.get(k, timing.get(k)) for k in cls.__dataclass_fields__})

    def per_class(self) -> list[dict[str, Any]]:
        return [
            {"class": c, "precision": p, "recall": r, "f1": f, "support": s}
            for c, p, r, f, s in zip(
                self.class_names, self.precision, self.recall, self.f1, self.support, strict=True
            )
        ]


def predict_probabilities(model: Any, x: np.ndarray, batch_size: int, tta: int = 0) -> np.ndarray:
    """Class probabilities, optionally averaged over test-time augmentations.

    tta 1: the image and its mirror. tta 2: that, averaged half-and-half with the same for the
    image shifted one pixel up-left and down-right (reflect-padded): six passes in all.
    The views' log-probabilities are averaged, not their probabilities: that is averaging the
    logits (each view's log-probabilities are its logits less a constant), as airbench does,
    and the result is the softmax of the averaged logits.
    Images on disk (an ImageArray) are read and predicted a block at a time.
    """
    if not isinstance(x, np.ndarray):
        block = max(batch_size, 4096)
        parts = [
            predict_probabilities(model, x[i : i + block], batch_size, tta)
            for i in range(0, len(x), block)
        ]
        return np.concatenate(parts)

    def run(images: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(images, batch_size=batch_size, verbose=0), dtype=np.float64)

    if tta <= 0:
        return run(x)

    def log_run(images: np.ndarray) -> np.ndarray:
        return np.log(np.clip(run(images), 1e-45, 1.0))

    def mirrored(images: np.ndarray) -> np.ndarray:
        return 0.5 * (log_run(images) + log_run(images[:, :, ::-1]))

    if tta == 1:
        mean = mirrored(x)
    else:
        h, w = x.shape[1:3]
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        shifted = [padded[:, 0:h, 0:w], padded[:, 2 : h + 2, 2 : w + 2]]
        mean = 0.5 * mirrored(x) + 0.25 * (mirrored(shifted[0]) + mirrored(shifted[1]))
    mean -= mean.max(axis=1, keepdims=True)
    probabilities = np.exp(mean)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def score(
    probabilities: np.ndarray, split: Split, class_names: list[str], seconds: float = 0.0
) -> EvalResult:
    """Metrics from predicted probabilities ``(N, classes)`` against the split's labels."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    from cnnkit.analysis import calibration
    from cnnkit.calibration import brier_score

    labels = np.arange(len(class_names))
    predicted = probabilities.argmax(axis=1)
    p_true = probabilities[np.arange(len(split.y)), split.y]
    loss = float(-np.mean(np.log(np.clip(p_true, _EPS, 1.0))))
    precision, recall, f1, support = precision_recall_fscore_support(
        split.y, predicted, labels=labels, zero_division=0
    )
    confusion = confusion_matrix(split.y, predicted, labels=labels)
    return EvalResult(
        loss=loss,
        accuracy=float(accuracy_score(split.y, predicted)),
        num_images=len(split.y),
        class_names=list(class_names),
        precision=[float(v) for v in precision],
        recall=[float(v) for v in recall],
        f1=[float(v) for v in f1],
        support=[int(v) for v in support],
        confusion=confusion.astype(int).tolist(),
        macro_f1=float(np.mean(f1)),
        ece=calibration(probabilities, split.y).ece,
        brier=brier_score(probabilities, split.y),
        seconds=round(seconds, 3),
        images_per_second=round(len(split.y) / seconds, 1) if seconds > 0 else 0.0,
    )


def evaluate_model(
    model: Any, split: Split, class_names: list[str], batch_size: int = 512, tta: int = 0
) -> EvalResult:
    """One (test-time augmented) prediction of ``split``; every number comes from it."""
    return predict_and_score(model, split, class_names, batch_size, tta)[0]


def predict_and_score(
    model: Any, split: Split, class_names: list[str], batch_size: int = 512, tta: int = 0
) -> tuple[EvalResult, np.ndarray]:
    """:func:`evaluate_model`, and the probabilities the numbers came from."""
    start = time.perf_counter()
    probabilities = predict_probabilities(model, split.x, batch_size, tta)
    return score(probabilities, split, class_names, time.perf_counter() - start), probabilities


def classification_report(result: EvalResult) -> str:
    """scikit-learn's text report, rebuilt from the confusion matrix."""
    from sklearn.metrics import classification_report as sk_report

    confusion = np.asarray(result.confusion)
    y_true = np.repeat(np.arange(len(confusion)), confusion.sum(axis=1))
    y_pred = np.concatenate([np.repeat(np.arange(len(row)), row) for row in confusion])
    return str(
        sk_report(
            y_true,
            y_pred,
            labels=np.arange(len(result.class_names)),
            target_names=[printable(name) for name in result.class_names],  # one line each
            digits=4,
            zero_division=0,
        )
    )
