"""Numbers only: test loss and accuracy, per-class precision/recall/F1, the confusion matrix,
calibration error and Brier score, from predicted probabilities (which
:func:`cnnkit.predictor.predict_probabilities` makes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cnnkit.data.base import Split
from cnnkit.log import printable


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


def score(
    probabilities: np.ndarray, split: Split, class_names: list[str], seconds: float = 0.0
) -> EvalResult:
    """Metrics from predicted probabilities ``(N, classes)`` against the split's labels."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    from cnnkit.analysis import calibration
    from cnnkit.calibration import brier_score, negative_log_likelihood

    labels = np.arange(len(class_names))
    predicted = probabilities.argmax(axis=1)
    loss = negative_log_likelihood(probabilities, split.y)
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
