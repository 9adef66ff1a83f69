"""Inference: a model's probabilities for images, with the run's test-time augmentation
(:func:`predict_probabilities`, which evaluation, the report and the service's batcher use too);
:class:`Predictor`, a run folder's model and class names, shared by the CLI, the server and the
tests; and :func:`predict`, what ``cnnkit predict`` does."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.calibration import log_probabilities
from cnnkit.data.base import Split
from cnnkit.data.folder import IMAGE_SUFFIXES as FOLDER_SUFFIXES
from cnnkit.data.images import load_image
from cnnkit.errors import ImageError, RunError
from cnnkit.metrics import EvalResult, score
from cnnkit.runs import ENGINES, Run, open_run


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
        return log_probabilities(run(images))

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


def evaluate_model(
    model: Any, split: Split, class_names: list[str], batch_size: int = 512, tta: int = 0
) -> tuple[EvalResult, np.ndarray]:
    """One (test-time augmented) prediction of ``split`` and its scores; every number comes
    from those probabilities, which are returned too."""
    start = time.perf_counter()
    probabilities = predict_probabilities(model, split.x, batch_size, tta)
    return score(probabilities, split, class_names, time.perf_counter() - start), probabilities


# The classes an answer lists unless asked for more or fewer: the API's, the command's
# (`--top-k`, whose default tests/test_predictor.py holds to this) and the service's.
TOP_K = 3


@dataclass(frozen=True)
class Prediction:
    source: str
    top: list[tuple[str, float]]  # (class name, probability), most likely first
    # The most likely class's probability is below the confidence asked for (min_confidence):
    # the answer is "unsure" rather than a class.
    unsure: bool = False

    @property
    def answer(self) -> str | None:
        """The class answered, or None when unsure."""
        return None if self.unsure else self.top[0][0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.source,
            "class": self.answer,
            "unsure": self.unsure,
            "top": [{"class": c, "probability": round(p, 6)} for c, p in self.top],
        }


def answer(
    source: str,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    top_k: int = TOP_K,
    min_confidence: float = 0.0,
) -> Prediction:
    """One image's answer from its (calibrated) class probabilities: the ``top_k`` classes, and
    "unsure" when the most likely one's probability is below ``min_confidence``."""
    order = np.argsort(-probabilities, kind="stable")[: max(1, top_k)]
    top = [(class_names[i], float(probabilities[i])) for i in order]
    return Prediction(source, top, unsure=top[0][1] < min_confidence)


def check_min_confidence(value: float | str) -> float:
    """``value`` (a number, or its text) as a probability threshold, or a CnnkitError saying
    what is allowed."""
    import math

    from cnnkit.errors import CnnkitError

    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or math.isnan(number) or not 0.0 <= number <= 1.0:
        raise CnnkitError(
            f"--min-confidence must be a probability between 0 and 1 (e.g. 0.9), got {value}"
        )
    return number


class Predictor:
    """Loads ``run``'s model once; predicts raw images of any size or mode."""

    def __init__(self, run: Run | str | Path, batch_size: int = 256, engine: str = "keras") -> None:
        """``engine``: keras (model.keras), or onnx / tflite / saved_model to run the run's export
        (``cnnkit export``) in its own runtime."""
        self.run = open_run(run)
        if engine == "keras":
            self.model = self.run.load_model()
        else:
            from cnnkit.exporter import ExportError, read_export, runtime

            if engine not in ENGINES:
                raise ExportError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
            path = read_export(self.run, engine)
            self.model = runtime(engine, path)
        self.engine = engine
        self.class_names = self.run.class_names
        self.batch_size = batch_size
        height, width, channels = self.run.meta()["input_shape"]
        self.image_size = (int(height), int(width))
        self.channels = int(channels)
        if engine != "keras":  # an export is checked by running it once on the run's input
            try:
                probe = self.model.predict(
                    np.zeros((1, *self.image_size, self.channels), np.float32)
                )
            except Exception as exc:
                raise RunError(
                    f"{path} does not take this run's images {(*self.image_size, self.channels)} "
                    f"({type(exc).__name__}); export the run again with --force"
                ) from None
            self.run.check_model(None, np.shape(probe), path)
        self.tta = self.run.config().train.tta  # predict as the run was evaluated

    def load(self, path: str | Path) -> np.ndarray:
        """An image file as the uint8 array the model takes (raises ImageError)."""
        return load_image(path, self.image_size, self.channels)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for uint8 images ``(N, H, W, C)`` (with the run's test-time augmentation)."""
        return predict_probabilities(self.model, images, self.batch_size, self.tta)

    def predict(
        self, paths: Sequence[str | Path], top_k: int = TOP_K, min_confidence: float = 0.0
    ) -> tuple[list[Prediction], list[ImageError]]:
        """Top-k classes for each readable file (unsure below ``min_confidence``); unreadable
        ones come back as errors."""
        predictions: list[Prediction] = []
        errors: list[ImageError] = []
        for item in self.predict_iter(paths, top_k, min_confidence=min_confidence):
            (errors if isinstance(item, ImageError) else predictions).append(item)  # type: ignore[arg-type]
        return predictions, errors

    def predict_iter(
        self,
        paths: Iterable[str | Path],
        top_k: int = TOP_K,
        chunk: int = 512,
        threads: int = 4,
        min_confidence: float = 0.0,
    ) -> Iterator[Prediction | ImageError]:
        """Answers in the order of ``paths``, ``chunk`` files at a time (decoded by ``threads``
        threads while the model is idle), so that memory stays flat for any number of files.
        An answer is "unsure" where the top probability is below ``min_confidence``."""
        check_min_confidence(min_confidence)
        from concurrent.futures import ThreadPoolExecutor

        def load(path: str | Path) -> np.ndarray | ImageError:
            try:
                return self.load(path)
            except ImageError as exc:
                return exc

        pending = list(paths)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for start in range(0, len(pending), chunk):
                part = pending[start : start + chunk]
                loaded = list(pool.map(load, part))
                arrays = [a for a in loaded if isinstance(a, np.ndarray)]
                probabilities = iter(self.probabilities(np.stack(arrays)) if arrays else [])
                for path, item in zip(part, loaded, strict=True):
                    if isinstance(item, ImageError):
                        yield item
                    else:
                        yield answer(str(path), next(probabilities), self.class_names,
                                     top_k, min_confidence)  # fmt: skip


def predict(
    run: Run | str | Path,
    paths: Iterable[str | Path],
    top_k: int = TOP_K,
    batch_size: int = 256,
    engine: str = "keras",
    min_confidence: float = 0.0,
) -> tuple[list[Prediction], list[ImageError]]:
    """Top-k classes for image files, folders (every image under them) and glob patterns, with
    ``run``'s model (``cnnkit predict``); files that cannot be read come back as errors, in order.
    Where the most likely class's (calibrated) probability is below ``min_confidence``, the
    answer is "unsure" (``Prediction.unsure``) instead of a class.

    For many files, :meth:`Predictor.predict_iter` gives the answers as they come.
    """
    check_min_confidence(min_confidence)
    files, errors = expand_paths([str(p) for p in paths])
    predictions, unreadable = Predictor(run, batch_size, engine).predict(
        files, top_k, min_confidence
    )
    return predictions, errors + unreadable


# The suffixes a training folder is read by, and TIFF (which PIL reads too).
IMAGE_SUFFIXES = FOLDER_SUFFIXES | {".tif", ".tiff"}


def expand_paths(arguments: Iterable[str]) -> tuple[list[Path], list[ImageError]]:
    """Files named, the image files under folders named (recursively, sorted, hidden ones left
    out), and the files matching glob patterns (``**`` included), in the order given; each
    argument that names nothing comes back as an error."""
    import glob

    files: list[Path] = []
    errors: list[ImageError] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )  # fmt: skip
            if not found:
                errors.append(ImageError(f"{path}: a folder with no image files in it"))
            files.extend(found)
        elif path.exists() or not glob.has_magic(argument):
            files.append(path)  # a missing file is answered as an error, in its place
        else:
            matched = sorted(Path(p) for p in glob.glob(argument, recursive=True))
            matched = [p for p in matched if p.is_file()]
            if not matched:
                errors.append(ImageError(f"{argument}: no files match this pattern"))
            files.extend(matched)
    return files, errors
