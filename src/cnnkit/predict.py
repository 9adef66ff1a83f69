"""Predictor: a run folder's model and class names, shared by the CLI, the server and the tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.images import load_image
from cnnkit.errors import ImageError
from cnnkit.metrics import predict_probabilities
from cnnkit.runs import Run, load_model, open_run


@dataclass(frozen=True)
class Prediction:
    source: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.source,
            "top": [{"class": c, "probability": round(p, 6)} for c, p in self.top],
        }


class Predictor:
    """Loads ``run``'s model once; predicts raw images of any size or mode."""

    def __init__(self, run: Run | str | Path, batch_size: int = 256) -> None:
        self.run = open_run(run)
        self.model = load_model(self.run.model_path)
        self.class_names = self.run.class_names
        self.batch_size = batch_size
        height, width, channels = self.model.input_shape[1:]
        self.image_size = (int(height), int(width))
        self.channels = int(channels)
        self.tta = self.run.config().train.tta  # predict as the run was evaluated

    def load(self, path: str | Path) -> np.ndarray:
        """An image file as the uint8 array the model takes (raises ImageError)."""
        return load_image(path, self.image_size, self.channels)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for uint8 images ``(N, H, W, C)`` (with the run's test-time augmentation)."""
        return predict_probabilities(self.model, images, self.batch_size, self.tta)

    def predict(
        self, paths: Sequence[str | Path], top_k: int = 5
    ) -> tuple[list[Prediction], list[ImageError]]:
        """Top-k classes for each readable file; unreadable ones come back as errors."""
        arrays, sources, errors = [], [], []
        for path in paths:
            try:
                arrays.append(self.load(path))
                sources.append(str(path))
            except ImageError as exc:
                errors.append(exc)
        if not arrays:
            return [], errors
        probabilities = self.probabilities(np.stack(arrays))
        return [self._top(s, p, top_k) for s, p in zip(sources, probabilities, strict=True)], errors

    def _top(self, source: str, probabilities: np.ndarray, top_k: int) -> Prediction:
        order = np.argsort(-probabilities)[: max(1, top_k)]
        return Prediction(source, [(self.class_names[i], float(probabilities[i])) for i in order])
