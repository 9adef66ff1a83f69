"""Compile, callbacks and fit. Knows nothing about where the images came from.

The network is trained inside a wrapper ``uint8 images -> augmentation -> network`` so that the
augmentation runs batched in the training graph (on any backend) while the saved model is the
bare network: prediction never pays for augmentation and can never apply it by mistake.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.config import TrainConfig
from cnnkit.data.base import Split
from cnnkit.env import import_keras
from cnnkit.runs import Run

keras = import_keras()  # this module is only imported to train


@dataclass(frozen=True)
class FitResult:
    history: dict[str, list[float]]
    epochs: int
    seconds: float
    stopped_early: bool
    best_epoch: int | None  # 1-based, by cfg.monitor; None without validation data


def create_optimizer(cfg: TrainConfig) -> Any:
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(cfg.learning_rate)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay)
    return keras.optimizers.SGD(
        cfg.learning_rate, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay or None
    )


def training_model(net: Any, augmenter: Any | None) -> Any:
    """``net`` preceded by ``augmenter``: what ``fit`` trains (the weights are shared with ``net``)."""
    if augmenter is None:
        return net
    inputs = keras.Input(shape=net.input_shape[1:], dtype="uint8", name="image")
    return keras.Model(inputs, net(augmenter(inputs)), name=f"train_{net.name}")


def fit(
    net: Any,
    train: Split,
    val: Split | None,
    num_classes: int,
    cfg: TrainConfig,
    run: Run,
    augmenter: Any | None = None,
    verbose: int | None = None,
) -> FitResult:
    """Train ``net`` in place; write history.csv and checkpoints/{best,last}.keras into ``run``."""
    model = training_model(net, augmenter)
    model.compile(
        optimizer=create_optimizer(cfg),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    run.checkpoints.mkdir(exist_ok=True)
    timer = EpochTimer(len(train))
    callbacks: list[Any] = [
        timer,  # first: it adds its numbers to the logs that the CSV logger writes
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(str(run.file("history.csv"))),
        SaveNetwork(net, run.checkpoints / "last.keras"),
    ]
    validation = None
    if val is not None:
        validation = (val.x, _one_hot(val.y, num_classes))
        mode = "max" if cfg.monitor.endswith("accuracy") else "min"
        callbacks.append(
            SaveNetwork(net, run.checkpoints / "best.keras", monitor=cfg.monitor, mode=mode)
        )
        if cfg.early_stopping:
            callbacks.append(
                keras.callbacks.EarlyStopping(cfg.monitor, patience=cfg.early_stopping, mode=mode)
            )
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2  # a progress bar only where someone watches it
    start = time.perf_counter()
    history = model.fit(
        train.x,
        _one_hot(train.y, num_classes),
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        validation_data=validation,
        validation_batch_size=cfg.eval_batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=verbose,
    )
    seconds = time.perf_counter() - start
    logs = {k: [float(v) for v in vs] for k, vs in history.history.items()}
    epochs = len(next(iter(logs.values()), []))
    best_epoch = None
    if val is not None and cfg.monitor in logs:
        pick = np.nanargmax if cfg.monitor.endswith("accuracy") else np.nanargmin
        best_epoch = int(pick(logs[cfg.monitor])) + 1
    return FitResult(logs, epochs, seconds, epochs < cfg.epochs, best_epoch)


def _one_hot(y: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[y]


class EpochTimer(keras.callbacks.Callback):  # type: ignore[misc]
    """Adds ``epoch_seconds`` and ``train_images_per_second`` (validation excluded) to the logs."""

    def __init__(self, images: int) -> None:
        super().__init__()
        self.images = images
        self._start = 0.0
        self._train_end: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        end = time.perf_counter()
        train_seconds = (self._train_end or end) - self._start
        if logs is not None:
            logs["epoch_seconds"] = round(end - self._start, 3)
            logs["train_images_per_second"] = round(self.images / train_seconds, 1)


class SaveNetwork(keras.callbacks.ModelCheckpoint):  # type: ignore[misc]
    """Keras's ModelCheckpoint, pointed at the bare network rather than the training wrapper."""

    def __init__(self, net: Any, path: Any, monitor: str | None = None, mode: str = "auto") -> None:
        if monitor is None:
            super().__init__(str(path), save_best_only=False, verbose=0)
        else:
            super().__init__(str(path), monitor=monitor, mode=mode, save_best_only=True, verbose=0)
        self.net = net

    def set_model(self, model: Any) -> None:
        super().set_model(self.net)
