"""Compile, callbacks and fit, resumable at any checkpoint. Knows nothing about where images came from.

The network is trained inside a wrapper ``uint8 images -> augmentation -> network`` so that the
augmentation runs batched in the training graph (on any backend) while the saved model is the
bare network: prediction never pays for augmentation and can never apply it by mistake.

Resuming gives the same result as not stopping because nothing random is left to chance:
the order of the training images in epoch ``e`` is a pure function of ``(seed, e)``, and the
random generators of dropout and augmentation are variables saved in the checkpoint. So ``fit``
runs one Keras ``fit`` call per epoch on that epoch's order (the rest of it, when resuming
mid-epoch), and the :class:`Checkpointer` callback commits the state after each epoch, and every
``train.checkpoint_steps`` steps when asked.

Over 500 lines: the fit loop and the callback that commits its checkpoints are two halves of one
protocol (what is saved when, and how a resume finds its place), and read best together.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.checkpoint import TrainState, load_state, save_state, saved_position
from cnnkit.config import AugmentConfig, TrainConfig, monitor_mode
from cnnkit.data.augment import EpochAugmenter, create_augmenter
from cnnkit.data.base import Split
from cnnkit.distributed import SINGLE, Group
from cnnkit.env import import_keras
from cnnkit.errors import TrainingDiverged, TrainingInterrupted
from cnnkit.log import notice
from cnnkit.models import model_parts
from cnnkit.optim import create_optimizer, steps_per_epoch
from cnnkit.runs import Run, save_network

keras = import_keras()  # this module is only imported to train
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitResult:
    history: dict[str, list[float]]
    epochs: int
    seconds: float
    stopped_early: bool
    best_epoch: int | None  # 1-based, by cfg.monitor; None without validation data


def training_model(net: Any, augmenter: Any | None) -> Any:
    """``net`` preceded by ``augmenter``: what ``fit`` trains (the weights are shared with ``net``)."""
    if augmenter is None:
        return net
    inputs = keras.Input(shape=net.input_shape[1:], dtype="uint8", name="image")
    return keras.Model(inputs, net(augmenter(inputs)), name=f"train_{net.name}")


def measure_speed(
    build: Any,
    train: Split,
    num_classes: int,
    cfg: TrainConfig,
    augment: AugmentConfig,
    seconds: float = 3.0,
    max_steps: int = 40,
) -> float:
    """Steady-state training images/s of a throwaway copy of the model: the median step time
    of at least 4 steps after 2 that trace and warm up, timed for ``seconds`` (a narrow network
    gets many steps, so its median is not one noisy step's; a wide one a few) or ``max_steps``."""
    net = build()
    model = training_model(net, create_augmenter(augment, 0))
    model.compile(
        optimizer=create_optimizer(cfg, steps_per_epoch(len(train), cfg.batch_size), net),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
    )
    batch = cfg.batch_size
    # Four batches, passed over as many times as the steps need: memory stays that of 4 batches.
    index = np.resize(np.arange(len(train)), batch * 4)
    x, y = train.x[index], _one_hot(train.y[index], num_classes)
    timer = _StepTimer(warmup=2, seconds=seconds, min_steps=4)
    passes = -(-(max_steps + 2) // 4)
    model.fit(x, y, batch_size=batch, epochs=passes, verbose=0, shuffle=False, callbacks=[timer])
    return batch / float(np.median(timer.seconds[2:]))


class _StepTimer(keras.callbacks.Callback):  # type: ignore[misc]
    """Times each training step; stops training once ``min_steps`` steps after ``warmup``
    took ``seconds`` in all."""

    def __init__(self, warmup: int, seconds: float, min_steps: int) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.warmup, self.limit, self.min_steps = warmup, seconds, min_steps
        self._start = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        timed = self.seconds[self.warmup :]
        if len(timed) >= self.min_steps and sum(timed) >= self.limit:
            self.model.stop_training = True


def adapt_layers(net: Any, images: np.ndarray) -> None:
    """Fit the layers that learn from the data before training (``adapt``), such as whitening."""
    for layer in model_parts(net).fitted:
        layer.adapt(images)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` training images in ``epoch``: the same in every process."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def fit(
    net: Any,
    train: Split,
    val: Split | None,
    num_classes: int,
    cfg: TrainConfig,
    run: Run,
    seed: int,
    augment: AugmentConfig | None = None,
    verbose: int | None = None,
    resume: bool = False,
    callbacks: list[Any] | None = None,
    group: Group = SINGLE,
) -> FitResult:
    """Train ``net`` in place, checkpointing into ``run``; with ``resume``, continue its checkpoint.

    ``callbacks`` are extra Keras callbacks, run after cnnkit's own at every epoch. ``group``:
    the processes training together (:mod:`cnnkit.distributed`); each feeds its share of every
    batch, and only process 0 writes into ``run``.
    """
    augment = augment or AugmentConfig(enabled=False)
    model = training_model(net, create_augmenter(augment, seed))
    steps = steps_per_epoch(len(train), cfg.batch_size)
    state_file = run.state_path
    resuming = resume and state_file.is_file()
    # Compiled as when the checkpoint was saved (its optimizer's variables are those of that
    # phase); at a phase boundary the loop below then moves on, as an uninterrupted run does.
    epoch, step = saved_position(state_file) if resuming else (0, 0)
    phase = training_phase(net, cfg, epoch - 1 if epoch and not step else epoch)
    if cfg.freeze_epochs and phase == "all":
        log.info(
            "train.freeze_epochs ignored: the model has no pretrained backbone "
            "(model.weights=none trains it whole, from scratch)"
        )
    compile_phase(model, net, cfg, steps, phase)
    if resuming:
        state = load_state(state_file, model)  # includes what adapt() fitted
        if cfg.schedule == "constant":
            model.optimizer.learning_rate = cfg.learning_rate  # the config's, even if forced anew
    else:
        state = TrainState()
        adapt_layers(net, train.x)
    epoch_images = EpochAugmenter(train.x, augment, seed)
    timer = EpochTimer(len(train))
    checkpointer = Checkpointer(net, run, cfg, state, len(train), timer, group)
    if resume and group.primary:
        checkpointer.restore_files()
    y = _one_hot(train.y, num_classes)
    validation: Any = None
    # Validation is sharded like training, in batches that split evenly over the devices.
    val_batch = max(group.devices, cfg.eval_batch_size // group.devices * group.devices)
    val_index = None
    if val is not None and group.distributed:
        val_index = group.shard(np.arange(len(val)), val_batch)
    if val is not None and val.in_memory:
        if val_index is None:  # all of it, without a copy
            validation = (val.x, _one_hot(val.y, num_classes))
        else:
            validation = (val.x[val_index], _one_hot(val.y[val_index], num_classes))
    elif val is not None:  # read from disk a batch at a time
        validation = Batches(
            val.x, _one_hot(val.y, num_classes), val_index, group.local_batch(val_batch)
        )
    weights = class_weights(train.y, num_classes) if cfg.class_weight == "balanced" else None
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2  # a progress bar only where someone watches it
    if not group.primary:
        verbose = 0  # process 0 shows the progress of all
    # The timer first: it adds to the logs; the user's last: they see the finished logs.
    all_callbacks = [timer, checkpointer, *(callbacks or [])]
    if cfg.tensorboard:  # after the timer, so that epoch times and images/s are logged too
        board = keras.callbacks.TensorBoard(run.tensorboard, write_graph=False)
        all_callbacks.insert(2, board)
    with _stop_on_signals(checkpointer):
        while state.epoch < cfg.epochs and not checkpointer.stop_early:
            if (now := training_phase(net, cfg, state.epoch)) != phase:
                phase = now
                compile_phase(model, net, cfg, steps, phase)
            order = epoch_order(seed, state.epoch, len(train))[state.step * cfg.batch_size :]
            order = group.shard(order, cfg.batch_size)  # all of it in one process
            common = {
                "initial_epoch": state.epoch,
                "epochs": cfg.epochs,  # for the progress display; the Checkpointer ends each call
                "validation_data": validation,
                "class_weight": weights,
                "callbacks": all_callbacks,
                "verbose": verbose,
                # The order is epoch_order's; Keras would otherwise shuffle arrays, and the
                # order of a PyDataset's batches.
                "shuffle": False,
            }
            if train.in_memory:
                if not epoch_images.active:
                    x = train.x[order]
                elif group.distributed:  # only this process's images, augmented as in one
                    x = epoch_images.batch(train.x[order], order, state.epoch)
                else:  # all at once, from the images padded once
                    x = epoch_images(state.epoch)[order]
                model.fit(
                    x,
                    y[order],
                    batch_size=group.local_batch(cfg.batch_size),
                    validation_batch_size=group.local_batch(val_batch)
                    if val and val.in_memory
                    else None,
                    **common,
                )
            else:  # images read from disk a batch at a time, in the same order
                augmenter = epoch_images if epoch_images.active else None
                batches = Batches(
                    train.x, y, order, group.local_batch(cfg.batch_size), augmenter, state.epoch
                )
                model.fit(batches, **common)
    return FitResult(
        state.history, state.epoch, state.seconds, checkpointer.stop_early, state.best_epoch
    )


def training_phase(net: Any, cfg: TrainConfig, epoch: int) -> str:
    """ "all" for networks without a pretrained backbone; else "frozen" for the first
    train.freeze_epochs epochs, then "finetune"."""
    if model_parts(net).backbone is None:
        return "all"
    return "frozen" if epoch < cfg.freeze_epochs else "finetune"


def compile_phase(model: Any, net: Any, cfg: TrainConfig, steps: int, phase: str) -> None:
    """Set what trains in ``phase`` and compile ``model`` with a fresh optimizer for it.

    Fine-tuning unfreezes the backbone's top ``train.finetune_layers`` layers (0: all) at the
    learning rate times ``train.finetune_lr_scale``; the backbone's BatchNorm layers stay frozen
    (inference mode), as Keras's transfer-learning guide advises for small datasets.
    """
    import dataclasses

    if phase != "all":
        backbone = model_parts(net).backbone
        backbone.trainable = phase == "finetune"
        if phase == "finetune":
            layers = backbone.layers
            cut = len(layers) - cfg.finetune_layers if cfg.finetune_layers else 0
            for i, layer in enumerate(layers):
                is_norm = isinstance(layer, keras.layers.BatchNormalization)
                layer.trainable = i >= cut and not is_norm
            cfg = dataclasses.replace(cfg, learning_rate=cfg.learning_rate * cfg.finetune_lr_scale)
    model.compile(
        optimizer=create_optimizer(cfg, steps, net),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
    )


def class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """scikit-learn's "balanced" weights, n / (classes * count); 1.0 for a class with no images."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(y)
    values = compute_class_weight("balanced", classes=present, y=y)
    weights = dict.fromkeys(range(num_classes), 1.0)
    weights.update({int(c): float(w) for c, w in zip(present, values, strict=True)})
    return weights


class Batches(keras.utils.PyDataset):  # type: ignore[misc]
    """Batches of images read from disk (an ImageArray) in a given order, augmented like the
    in-memory path (same images for the same seed and epoch). Two worker threads read ahead."""

    def __init__(
        self,
        images: Any,
        y: np.ndarray,
        order: np.ndarray | None,
        batch_size: int,
        augmenter: EpochAugmenter | None = None,
        epoch: int = 0,
    ) -> None:
        super().__init__(workers=2, use_multiprocessing=False, max_queue_size=4)
        self.images, self.y, self.batch_size = images, y, batch_size
        self.order = np.arange(len(y)) if order is None else order
        self.augmenter, self.epoch = augmenter, epoch

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        index = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        x = self.images[index]
        if self.augmenter is not None:
            x = self.augmenter.batch(x, index, self.epoch)
        return x, self.y[index]


def _one_hot(y: np.ndarray, num_classes: int) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[y]


@contextlib.contextmanager
def _stop_on_signals(checkpointer: Checkpointer) -> Iterator[None]:
    """Ctrl-C or SIGTERM: finish the batch, save, stop. A second Ctrl-C stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum: int, frame: Any) -> None:
        checkpointer.stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        notice("stopping after this batch to save a checkpoint (Ctrl-C again quits at once)")

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in saved:
        signal.signal(s, request_stop)
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


class EpochTimer(keras.callbacks.Callback):  # type: ignore[misc]
    """Adds ``epoch_seconds`` and ``train_images_per_second`` (validation excluded) to the logs."""

    def __init__(self, images: int) -> None:
        super().__init__()
        self.images = images
        self._start = 0.0
        self._train_end: float | None = None
        self.train_seconds = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()
        self._train_end = None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        end = time.perf_counter()
        self.train_seconds = (self._train_end or end) - self._start
        if logs is not None:
            logs["epoch_seconds"] = round(end - self._start, 3)
            logs["train_images_per_second"] = round(self.images / self.train_seconds, 1)


class Checkpointer(keras.callbacks.Callback):  # type: ignore[misc]
    """Keeps the training state and commits it; writes history.csv and the best and last networks.

    One callback rather than ModelCheckpoint + CSVLogger + EarlyStopping, because all of them keep
    state that must survive a crash together: after a kill, the checkpoint is the only truth, and
    every file is re-derived from it on resume. Commit order at an epoch's end: state.npz (the
    commit point), history.csv, last.keras, best.keras.
    """

    def __init__(
        self,
        net: Any,
        run: Run,
        cfg: TrainConfig,
        state: TrainState,
        images: int,
        timer: EpochTimer,
        group: Group = SINGLE,
    ) -> None:
        super().__init__()
        self.net, self.run, self.cfg, self.state, self.images = net, run, cfg, state, images
        self.timer, self.group = timer, group
        self.stop_requested = False
        self.stop_early = False
        self._mode_max = monitor_mode(cfg.monitor) == "max"
        # Where this session's part of the epoch started (set at each epoch's beginning).
        self._base_logs: dict[str, float] = {}
        self._base_samples = 0
        self._base_partial_seconds = 0.0
        self._base_seconds = 0.0
        self._base_step = 0
        self._t0 = 0.0
        self._it0 = 0
        self._logs: dict[str, float] = {}

    # -- resume -----------------------------------------------------------------------------------

    def restore_files(self) -> None:
        """Re-derive the files a kill may have left behind the committed state."""
        self._write_history()
        if self.state.step == 0 and self.state.epoch > 0:
            # Written just after the commit, so one older than the commit missed it.
            best_due = self.state.best_epoch == self.state.epoch
            for path, due in ((self.run.last_path, True), (self.run.best_path, best_due)):
                if due and (not path.is_file() or path.stat().st_mtime < self.state.saved_at):
                    save_network(self.net, path)

    # -- batches ----------------------------------------------------------------------------------

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        state = self.state
        self._base_logs = dict(state.partial_logs)
        self._base_samples = state.partial_samples
        self._base_partial_seconds = state.partial_seconds
        self._base_seconds = state.seconds
        self._base_step = state.step
        self._t0 = time.perf_counter()
        self._it0 = int(self.model.optimizer.iterations)
        self._logs = {}

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if not math.isfinite(float(logs.get("loss", 0.0))):
            self._diverged(f"step {self._steps_done()}")
        self._logs = {k: float(v) for k, v in logs.items()}
        steps = self._steps_done()
        # A stop asked of any process stops all of them at this same step.
        self.stop_requested = self.group.any(self.stop_requested)
        if self.stop_requested:
            self._save_partial(steps)
            raise TrainingInterrupted(self._interrupted_message())
        every = self.cfg.checkpoint_steps
        if every and steps % every == 0 and steps * self.cfg.batch_size < self.images:
            self._save_partial(steps)

    def _steps_done(self) -> int:
        # The optimizer's step count is the truth: it moved exactly once per applied batch.
        return self._base_step + int(self.model.optimizer.iterations) - self._it0

    def _save_partial(self, steps: int) -> None:
        state = self.state
        samples = min(steps * self.cfg.batch_size, self.images)
        state.partial_logs = _combine(self._base_logs, self._base_samples, self._logs, samples)
        state.partial_samples = samples
        elapsed = time.perf_counter() - self._t0
        state.partial_seconds = self._base_partial_seconds + elapsed
        state.seconds = self._base_seconds + elapsed
        state.step = steps
        self._commit()

    def _commit(self) -> None:
        """Process 0 writes the state (the commit point); every process waits for it."""
        if self.group.primary:
            save_state(self.run.state_path, self.model, self.state)
        self.group.barrier("checkpoint")

    # -- epochs -----------------------------------------------------------------------------------

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        if not math.isfinite(float(logs.get("loss", 0.0))):
            self._diverged("the end of the epoch")
        state = self.state
        if self._base_samples:  # this epoch was resumed part-way: complete its running means
            logs.update(_combine(self._base_logs, self._base_samples, logs, self.images))
            logs["epoch_seconds"] = round(
                logs.get("epoch_seconds", 0) + self._base_partial_seconds, 3
            )
            remaining = self.images - self._base_samples
            logs["train_images_per_second"] = round(
                remaining / max(self.timer.train_seconds, 1e-9), 1
            )
        state.seconds = self._base_seconds + time.perf_counter() - self._t0
        for key, value in logs.items():
            state.history.setdefault(key, []).append(float(value))
        improved = False
        value = logs.get(self.cfg.monitor)
        if value is not None and math.isfinite(float(value)):
            better = state.best is None or (
                value > state.best if self._mode_max else value < state.best
            )
            if better:
                state.best, state.best_epoch, improved = float(value), epoch + 1, True
        state.epoch, state.step = epoch + 1, 0
        state.partial_logs, state.partial_samples, state.partial_seconds = {}, 0, 0.0
        self._commit()
        if self.group.primary:
            self._write_history()
            save_network(self.net, self.run.last_path)
            if improved:
                save_network(self.net, self.run.best_path)
        # One Keras fit call per epoch: the next epoch's images are augmented and ordered anew.
        self.model.stop_training = True
        patience = self.cfg.early_stopping
        if patience and state.best_epoch is not None and state.epoch - state.best_epoch >= patience:
            self.stop_early = True
            log.info(
                "early stopping: no better %s for %d epochs (best at epoch %d)",
                self.cfg.monitor, patience, state.best_epoch,
            )  # fmt: skip
        self.stop_requested = self.group.any(self.stop_requested)
        if self.stop_requested and state.epoch < self.cfg.epochs:
            raise TrainingInterrupted(self._interrupted_message())

    def _write_history(self) -> None:
        self.run.write_history(self.state.history)

    def _interrupted_message(self) -> str:
        how = "cnnkit launch --nproc N -- train" if self.group.distributed else "cnnkit train"
        return (
            f"stopped at {self.state.position} with a checkpoint saved; "
            f"resume with: {how} --resume {self.run.path}"
        )

    def _diverged(self, where: str) -> None:
        state = self.state
        kept = (
            f"the checkpoint at {state.position} is kept"
            if state.epoch or state.step
            else "no checkpoint was saved yet"
        )
        raise TrainingDiverged(
            f"the loss became NaN or infinite at epoch {state.epoch + 1}, {where}; {kept}. "
            f"Lower train.learning_rate, then: cnnkit train --resume {self.run.path} --force "
            f"train.learning_rate=..."
        )


def _combine(
    first: dict[str, float], first_samples: int, second: dict[str, Any], total_samples: int
) -> dict[str, float]:
    """Merge running means: ``first`` over the first ``first_samples`` images of an epoch,
    ``second`` over the images after them, up to ``total_samples``. Keras's training means
    (loss, accuracy) are weighted by samples, so the merge is exact."""
    if not first_samples:
        return {k: float(v) for k, v in second.items() if not k.startswith("val_")}
    second_samples = total_samples - first_samples
    return {
        key: (value * first_samples + float(second.get(key, value)) * second_samples)
        / total_samples
        for key, value in first.items()
    }
