"""A tiny generated RGB dataset for tests and demos: four classes told apart by colour.

It has the shape of CIFAR-10 (32x32x3 uint8) so that the RGB path is exercised end to end without
any file, and a model learns it in one epoch (useful to check that training really trains).
"""

from __future__ import annotations

import numpy as np

from cnnkit.data.base import Source, Split

CLASSES = ("red", "green", "blue", "grey")
_COLOURS = np.array([[200, 40, 40], [40, 180, 60], [40, 60, 200], [128, 128, 128]], np.float32)
SIZE = 32
TRAIN_PER_CLASS = 200
TEST_PER_CLASS = 50


def make(per_class: int, seed: int) -> Split:
    """``per_class`` noisy images of each colour class, shuffled."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(CLASSES)), per_class)
    rng.shuffle(y)
    # A per-image brightness change and pixel noise, so that the task is not a lookup.
    base = _COLOURS[y] * rng.uniform(0.7, 1.2, size=(len(y), 1))
    x = base[:, None, None, :] + rng.normal(0, 30, size=(len(y), SIZE, SIZE, 3))
    return Split(np.clip(np.rint(x), 0, 255).astype(np.uint8), y.astype(np.int64))


def load() -> Source:
    return Source(make(TRAIN_PER_CLASS, seed=1), make(TEST_PER_CLASS, seed=2), CLASSES, "generated")
