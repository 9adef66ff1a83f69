"""The time-budget policy: how many epochs (or how many images, and which batch) ``train.budget``
seconds buy at the speed measured on this machine; and the warning for too few optimizer steps.

The whole schedule (warm-up, decay, lookahead) then spans what fits: a short budget gets a
complete short schedule rather than the start of a long one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

from cnnkit.config import Config
from cnnkit.errors import ConfigError

log = logging.getLogger(__name__)

# A budget that fits less than one epoch trains smaller batches, down to SHORT_BATCH, so that
# its one short schedule still takes about SHORT_STEPS optimizer steps: at the fast preset's
# batch of 1024, two minutes here are ~40 steps. Its rates are per example and carry over.
SHORT_STEPS = 150
SHORT_BATCH = 256
# What an epoch costs beyond its training steps (validation, checkpoints, augmentation).
OVERHEAD = 0.05


def fit_budget(config: Config, data: Any, policy: str) -> tuple[Config, dict[str, float]]:
    """Set train.epochs so that training fits in train.budget seconds, at a measured speed.

    Returns the changed config and the record run.json keeps (``budget``). The speed is measured
    at a batch of at most SHORT_BATCH (quick; on a CPU the speed hardly depends on the batch, on
    a GPU a larger batch is faster, so the estimate errs on the side of fitting). Less than one
    epoch: one epoch on a stratified sample of the size that fits, drawn before the validation
    split like ``data.train_subset`` (which records it for resume and for the run's config).
    """
    from cnnkit import env, trainer
    from cnnkit.models import create_model

    start = time.perf_counter()
    keras = env.import_keras()
    keras.mixed_precision.set_global_policy(policy)

    def build() -> Any:
        return create_model(
            config.model.name, data.input_shape, data.num_classes, config.model.weights,
            **config.model.params,
        )  # fmt: skip

    probe = dataclasses.replace(config.train, batch_size=min(config.train.batch_size, SHORT_BATCH))
    speed = trainer.measure_speed(build, data.train, data.num_classes, probe, config.augment)
    spent = time.perf_counter() - start
    images = (config.train.budget - spent) * speed * (1 - OVERHEAD)
    epochs = int(images // len(data.train))
    record = {"seconds": config.train.budget, "images_per_second": round(speed, 1),
              "calibration_seconds": round(spent, 1), "epochs": max(epochs, 1)}  # fmt: skip
    if epochs >= 1:
        log.info(
            "budget %g s: %.0f images/s measured, so %d epochs (was %d)",
            config.train.budget, speed, epochs, config.train.epochs,
        )  # fmt: skip
        return config.replace(**{"train.epochs": epochs}), record
    batch = config.train.batch_size
    while batch > SHORT_BATCH and images / batch < SHORT_STEPS:
        batch //= 2
    keep = 1.0 - config.data.val_split
    subset = int(images / keep)
    if subset < max(2 * batch, 10 * data.num_classes):
        raise ConfigError(
            f"train.budget={config.train.budget:g} s is too short: {speed:.0f} training images/s "
            f"here, after {spent:.0f} s measuring it; give at least "
            f"{spent + 2 * batch / speed / (1 - OVERHEAD) + 1:.0f} s"
        )
    smaller = (
        f", batches of {batch} (was {config.train.batch_size})"
        if batch != config.train.batch_size
        else ""
    )
    log.info(
        "budget %g s: %.0f images/s measured, so 1 epoch on %d of the %d training images%s",
        config.train.budget, speed, int(subset * keep), len(data.train), smaller,
    )  # fmt: skip
    record["train_images"] = int(subset * keep)
    record["batch_size"] = batch
    changes = {"train.epochs": 1, "data.train_subset": subset, "train.batch_size": batch}
    return config.replace(**changes), record


def few_steps_warning(images: int, batch: int, epochs: int) -> str | None:
    """A warning when training makes fewer than 100 optimizer steps, suggesting a batch that
    makes about 100 (a power of two, at least 16, smaller than ``batch``) or more epochs.

    The fast recipe's batch of 1024 suits 50,000 images; a small folder gets few updates.
    """
    steps = -(-images // batch) * epochs
    if steps >= 100:
        return None
    fits = min(images * epochs // 100, batch // 2)
    smaller = max(16, 2 ** int(math.log2(max(1, fits))))
    advice = f"a smaller batch (train.batch_size={smaller}) or more epochs"
    if smaller >= batch:
        advice = "more epochs"
    return (
        f"{images} training images at batch {batch} make only {steps} optimizer steps "
        f"in all; {advice} will likely learn more"
    )
