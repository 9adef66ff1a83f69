"""The time-budget policy: what ``train.budget`` seconds buy on this machine, at its measured
speed (the network's width, the number of passes over the data, the batch); and the warning for
too few optimizer steps.

The whole schedule (warm-up, decay, lookahead) then spans what fits: a short budget gets a
complete short schedule rather than the start of a long one.

For the fast network (``fast_cnn`` with widths the user did not set) the budget also chooses
the width, from a family of the fast network (:data:`FAMILY`): on a slow CPU the full network
sees less than one pass in two minutes, while a narrower one sees the data several times and
ends higher. The rule is the widest member that makes at least :data:`MIN_PASSES` (4) passes over
the training images in the time left. Other members' speeds are guessed from the one measured
(RELATIVE_COST) only to decide which to measure next: the chosen member's speed is measured.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from cnnkit.config import Config
from cnnkit.data import held_out_share
from cnnkit.errors import ConfigError

log = logging.getLogger(__name__)

# The fast network's family, narrowest first, ending at fast_cnn's own widths (airbench94's).
# Most of the work of the first group is at 31x31 and buys little accuracy early on, so the
# narrow members keep it at 16 filters and spend on the later groups.
FAMILY: tuple[tuple[int, int, int], ...] = (
    (16, 64, 64),
    (32, 128, 128),
    (48, 192, 192),
    (64, 256, 256),
)
# Seconds per training image of each member, relative to the first: only to guess which member
# to measure next (the speed that sizes the run is always measured). Medians of two probes at
# batch 256, float32, on an AVX2-only 2-core EPYC (1,305, 540, 279, 156 images/s; issue 16).
RELATIVE_COST: tuple[float, ...] = (1.0, 2.4, 4.7, 8.4)
# A member is chosen over a narrower one once it makes this many passes in the time left: more
# passes beat more width at equal seconds. CIFAR-10, one seed each, AVX2 EPYC (issue 16): at
# ~600 s, 32x128x128 for 5 passes 86.2 % against 48x192x192 for 3 passes 85.3 %; at ~100 s,
# 16x32x64 for 3 passes 78.3 % against 24x48x48 for 2 passes 74.7 %.
MIN_PASSES = 4.0
# Batches halve from the preset's (1024 for fast) while the whole schedule would make fewer
# than TARGET_STEPS optimizer steps (the fast recipe's 10 epochs make 490), not below
# SHORT_BATCH. The fast recipe's rates are per example, so they carry over.
TARGET_STEPS = 400
SHORT_BATCH = 256
# A training set smaller than two batches halves the batch further, to no less than this.
MIN_BATCH = 16
# What training costs beyond the probe's steady steps: a share of every step (real epochs ran
# at 0.79-0.96 of the probed speed here: the data pipeline over the whole array, the metrics)
# and seconds per epoch (augmentation, the checkpoint, the first step's trace).
OVERHEAD = 0.10
EPOCH_SECONDS = 1.5
# Passes are rounded up to whole epochs (on a sample that fits) from this fraction of a pass on;
# below it, down (leaving at most this much of a pass unused).
ROUND_UP = 0.25


def fit_budget(config: Config, data: Any, policy: str) -> tuple[Config, dict[str, Any]]:
    """Choose what ``config.train.budget`` seconds train, at speeds measured here.

    Returns the changed config and the record run.json keeps (``budget``). Speeds are measured
    at a batch of at most SHORT_BATCH (quick; on a CPU the speed hardly depends on the batch, on
    a GPU a larger batch is faster, so the estimate errs on the side of fitting). The passes
    that fit are rounded to whole epochs; when the epochs would take longer than the budget,
    they run on a stratified sample of the training images of the size that fits, drawn before
    the validation split like ``data.train_subset`` (which records it for resume and for the
    run's config). Changes ``model.params.widths`` (when the budget chose the width),
    ``train.epochs``, ``train.batch_size`` and ``data.train_subset``.
    """
    from cnnkit import env

    start = time.perf_counter()
    keras = env.import_keras()
    keras.mixed_precision.set_global_policy(policy)
    budget = config.train.budget
    n = len(data.train)

    def left() -> float:
        return budget - (time.perf_counter() - start)

    params = dict(config.model.params)
    record: dict[str, Any] = {"seconds": budget}
    if chooses_width(config):
        speeds = {0: _measure(config, data, {**params, "widths": list(FAMILY[0])})}
        first = budget - left()

        def probe_cost(member: int) -> float:  # the first probe's, plus its slower warm-up steps
            return first + 2 * SHORT_BATCH / member_speed(speeds, member)

        member = choose_member(speeds, left(), n, probe_cost)
        while member not in speeds:  # each member is measured once at most
            speeds[member] = _measure(config, data, {**params, "widths": list(FAMILY[member])})
            member = choose_member(speeds, left(), n, probe_cost)
        speed = member_speed(speeds, member)
        params["widths"] = list(FAMILY[member])
        record["widths"] = params["widths"]
        record["measured"] = {"x".join(map(str, FAMILY[i])): round(s, 1) for i, s in speeds.items()}
    else:
        speed = _measure(config, data, params)
    remaining = left()  # one instant for the whole plan
    spent = budget - remaining
    passes = _passes(remaining, speed, n)
    epochs = max(1, math.ceil(passes - ROUND_UP))
    per_epoch = min(n, int(_images(remaining, speed, epochs) / epochs))
    batch = config.train.batch_size
    while batch > SHORT_BATCH and epochs * (per_epoch / batch) < TARGET_STEPS:
        batch //= 2
    while batch > MIN_BATCH and 2 * batch > per_epoch:  # a small dataset: two steps an epoch
        batch //= 2
    keep = 1.0 - held_out_share(config.data, config.train.calibrate)
    subset = int(per_epoch / keep)
    if per_epoch < min(n, max(2 * batch, 10 * data.num_classes)):
        raise ConfigError(
            f"train.budget={budget:g} s is too short: {speed:.0f} training images/s "
            f"here, after {spent:.0f} s measuring it; give at least "
            f"{spent + EPOCH_SECONDS + 2 * batch / speed / (1 - OVERHEAD) + 1:.0f} s"
        )
    record.update(images_per_second=round(speed, 1), calibration_seconds=round(spent, 1),
                  passes=round(passes, 2), epochs=epochs, batch_size=batch)  # fmt: skip
    changes: dict[str, Any] = {"train.epochs": epochs, "train.batch_size": batch}
    if "widths" in record:
        changes["model.params.widths"] = params["widths"]
    sample = ""
    if per_epoch < n:
        record["train_images"] = int(subset * keep)
        changes["data.train_subset"] = subset
        sample = f" on {int(subset * keep)} of the {n} training images"
    width = f", widths {params['widths']}" if "widths" in record else ""
    log.info(
        "budget %g s: %.0f images/s measured%s, so %d epoch%s%s at batch %d",
        budget, speed, width, epochs, "s" if epochs > 1 else "", sample, batch,
    )  # fmt: skip
    return config.replace(**changes), record


def chooses_width(config: Config) -> bool:
    """Whether the budget chooses the network's width: the fast network, widths not set."""
    return config.model.name == "fast_cnn" and "widths" not in config.model.params


def choose_member(
    speeds: dict[int, float],
    seconds: float,
    images: int,
    probe_cost: Callable[[int], float] = lambda member: 0.0,
) -> int:
    """The widest member of FAMILY that makes MIN_PASSES passes over ``images`` in ``seconds``
    (less ``probe_cost(member)`` for one not measured yet; the narrowest when none does), from
    the ``speeds`` measured so far (member -> images/s)."""
    for member in reversed(range(len(FAMILY))):
        cost = 0.0 if member in speeds else probe_cost(member)
        if _passes(seconds - cost, member_speed(speeds, member), images) >= MIN_PASSES:
            return member
    return 0


def member_speed(speeds: dict[int, float], member: int) -> float:
    """A member's images/s: measured, or scaled by RELATIVE_COST from the nearest measured one."""
    nearest = min(speeds, key=lambda m: (abs(m - member), -m))
    return speeds[nearest] * RELATIVE_COST[nearest] / RELATIVE_COST[member]


def _passes(seconds: float, speed: float, images: int) -> float:
    """How many passes over ``images`` fit in ``seconds`` at ``speed``, with the epochs' costs."""
    return seconds / (images / (speed * (1 - OVERHEAD)) + EPOCH_SECONDS)


def _images(seconds: float, speed: float, epochs: float) -> float:
    """How many training images ``epochs`` epochs can take in ``seconds`` at ``speed``."""
    return max(0.0, seconds - epochs * EPOCH_SECONDS) * speed * (1 - OVERHEAD)


def _measure(config: Config, data: Any, params: dict[str, Any]) -> float:
    from cnnkit import trainer
    from cnnkit.models import create_model

    def build() -> Any:
        return create_model(
            config.model.name, data.input_shape, data.num_classes, config.model.weights, **params
        )

    probe = dataclasses.replace(config.train, batch_size=min(config.train.batch_size, SHORT_BATCH))
    return float(trainer.measure_speed(build, data.train, data.num_classes, probe, config.augment))


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
