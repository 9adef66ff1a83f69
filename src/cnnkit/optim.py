"""Optimizers and learning-rate schedules, built from the train config.

``adam``, ``adamw`` and ``sgd`` are Keras's own. ``nesterov`` is the fast recipe's optimizer, which
Keras does not have: PyTorch-style Nesterov SGD with

- learning rate and weight decay given per 1024 examples, as airbench states them, so that the
  recipe keeps its meaning at any batch size;
- weight decay that removes the same fraction of every weight, whatever that weight's learning rate
  ("decoupled"), applied through the momentum as PyTorch does;
- a learning-rate multiplier for BatchNorm biases (they need a far larger step than the weights);
- variables frozen after a given step (the whitening layer's bias, after a few epochs);
  which variables these are, the model says (:func:`cnnkit.models.model_parts`);
- lookahead: every k steps the weights are pulled back towards a slow copy, by a share that grows
  during training, and the last step hands back the slow copy.

All state (momenta, slow weights, the step) is optimizer variables, so a checkpoint holds it and a
resumed run continues exactly.
"""

from __future__ import annotations

import math
from typing import Any

from cnnkit.config import TrainConfig
from cnnkit.env import import_keras

keras = import_keras()
ops = keras.ops


@keras.saving.register_keras_serializable(package="cnnkit")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]
    """From ``start * peak`` up to ``peak`` over the first ``warmup`` share of the steps, then
    linearly down to ``end * peak`` at ``total_steps`` (and there after)."""

    def __init__(
        self,
        peak: float,
        total_steps: int,
        warmup: float = 0.2,
        start: float = 0.2,
        end: float = 0.0,
    ) -> None:
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup = float(warmup)
        self.start = float(start)
        self.end = float(end)

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        top = max(self.warmup * self.total_steps, 1.0)
        rising = self.start + (1.0 - self.start) * step / top
        left = ops.clip((self.total_steps - step) / max(self.total_steps - top, 1.0), 0.0, 1.0)
        falling = self.end + (1.0 - self.end) * left
        return self.peak * ops.clip(ops.where(step < top, rising, falling), 0.0, 1.0)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup": self.warmup,
            "start": self.start,
            "end": self.end,
        }


@keras.saving.register_keras_serializable(package="cnnkit")
class NesterovSGD(keras.optimizers.Optimizer):  # type: ignore[misc]
    """Nesterov SGD with per-variable learning-rate multipliers, decoupled weight decay, freezing
    and lookahead (see the module's docstring).

    ``learning_rate`` is the step for a mean loss (a float or a schedule); ``decay`` the weight
    decay per step at the peak rate; ``peak`` that rate. ``multipliers`` and ``freeze_after`` map a
    variable's path to its learning-rate multiplier and to the step after which it stops moving.
    """

    def __init__(
        self,
        learning_rate: Any,
        peak: float,
        momentum: float = 0.9,
        decay: float = 0.0,
        multipliers: dict[str, float] | None = None,
        freeze_after: dict[str, int] | None = None,
        lookahead_every: int = 0,
        total_steps: int = 1,
        name: str = "nesterov_sgd",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.peak = float(peak)
        self.momentum = float(momentum)
        self.decay = float(decay)
        self.multipliers = dict(multipliers or {})
        self.freeze_after = dict(freeze_after or {})
        self.lookahead_every = int(lookahead_every)
        self.total_steps = int(total_steps)

    def build(self, variables: list[Any]) -> None:
        if self.built:
            return
        super().build(variables)
        self.momenta = [self.add_variable_from_reference(v, "momentum") for v in variables]
        self.slow = (
            [self.add_variable_from_reference(v, "slow") for v in variables]
            if self.lookahead_every
            else []
        )
        for v, slow in zip(variables, self.slow, strict=False):
            slow.assign(ops.copy(v))  # a buffer of its own (JAX donates both to each step)
        # Per variable, by position (update_step may be handed the backend's own variable).
        self._multiplier_of = [float(self.multipliers.get(v.path, 1.0)) for v in variables]
        self._frozen_at = [self.freeze_after.get(v.path) for v in variables]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        index = self._get_variable_index(variable)
        multiplier = self._multiplier_of[index]
        dtype = variable.dtype
        gradient = ops.cast(gradient, dtype)
        # PyTorch adds decay/lr * w to the gradient so that lr * (g + decay/lr * w) decays every
        # weight by the same share; with a multiplier the divisor is that weight's own peak rate.
        gradient = gradient + (self.decay / (self.peak * multiplier)) * variable
        momentum = self.momenta[index]
        self.assign(momentum, self.momentum * momentum + gradient)
        step = ops.cast(learning_rate, dtype) * multiplier
        frozen_at = self._frozen_at[index]
        if frozen_at is not None:
            step = ops.where(ops.less(self.iterations, frozen_at), step, ops.zeros_like(step))
        self.assign_sub(variable, step * (gradient + self.momentum * momentum))

    def apply(self, grads: Any, trainable_variables: Any = None) -> Any:
        result = super().apply(grads, trainable_variables)
        if self.lookahead_every and self.slow:
            self._lookahead()
        return result

    def _lookahead(self) -> None:
        done = ops.cast(self.iterations, "float32")  # steps taken, this one included
        last = ops.greater_equal(done, float(self.total_steps))
        due = ops.logical_or(ops.equal(ops.mod(self.iterations, self.lookahead_every), 0), last)
        # The slow copy keeps 0.95**5 * (progress)**3 of itself: nothing early, 77 % at the end;
        # at the last step it keeps all of itself and becomes the weights.
        progress = ops.minimum(done / float(self.total_steps), 1.0)
        keep = ops.where(last, 1.0, 0.95**5 * progress**3)
        for variable, slow in zip(self._trainable_variables, self.slow, strict=True):
            # Values, not Variables: JAX's ops refuse a Keras Variable inside a traced function.
            old, weights = ops.convert_to_tensor(slow), ops.convert_to_tensor(variable)
            moved = old + (1.0 - ops.cast(keep, old.dtype)) * (weights - old)
            new_slow = ops.where(due, moved, old)
            self.assign(slow, new_slow)
            self.assign(variable, ops.where(due, new_slow, weights))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "peak": self.peak,
            "momentum": self.momentum,
            "decay": self.decay,
            "multipliers": self.multipliers,
            "freeze_after": self.freeze_after,
            "lookahead_every": self.lookahead_every,
            "total_steps": self.total_steps,
        }


def create_optimizer(cfg: TrainConfig, steps_per_epoch: int, net: Any) -> Any:
    """The optimizer of ``cfg`` for ``net``, its schedule spanning ``cfg.epochs`` epochs of
    ``steps_per_epoch``. The fast recipe's ``nesterov`` asks ``net`` which variables are
    BatchNorm offsets and fitted biases (:func:`cnnkit.models.model_parts`)."""
    from cnnkit.models import model_parts

    total = max(1, cfg.epochs * steps_per_epoch)
    peak = cfg.learning_rate
    decay = cfg.weight_decay
    if cfg.optimizer == "nesterov":
        # airbench's units: lr and decay per 1024 examples of a summed loss, divided by the
        # momentum's long-run gain 1 + 1/(1 - momentum); the loss here is a mean, hence * batch.
        kilostep = 1024 * (1 + 1 / (1 - cfg.momentum))
        peak = cfg.learning_rate / kilostep * cfg.batch_size
        decay = cfg.weight_decay * cfg.batch_size / kilostep
    rate: Any = peak
    if cfg.schedule == "linear":
        rate = WarmupLinearDecay(peak, total, warmup=cfg.warmup, end=cfg.lr_end)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=decay)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(
            rate, momentum=cfg.momentum, nesterov=True, weight_decay=decay or None
        )
    parts = model_parts(net)
    freeze = {}
    if cfg.whiten_bias_epochs:  # the fitted (whitening) layer's bias moves for the first epochs
        freeze = {v.path: cfg.whiten_bias_epochs * steps_per_epoch for v in parts.fitted_biases}
    return NesterovSGD(
        rate,
        peak=peak,
        momentum=cfg.momentum,
        decay=decay,
        # BatchNorm offsets get a far larger step than the weights.
        multipliers={v.path: cfg.bias_lr_scale for v in parts.norm_biases},
        freeze_after=freeze,
        lookahead_every=cfg.lookahead,
        total_steps=total,
    )


def steps_per_epoch(images: int, batch_size: int) -> int:
    return math.ceil(images / batch_size)
