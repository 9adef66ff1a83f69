"""Training-time augmentation: Keras preprocessing layers in the graph, and per-epoch array ops.

The default equals the tutorial's ``ImageDataGenerator(rotation_range=15, width_shift_range=0.1,
height_shift_range=0.1, horizontal_flip=True)`` (fill mode 'nearest', bilinear interpolation).
The layers run inside the training graph on whole batches, on any backend, and are not part of the
saved model: prediction never sees them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit.config import AugmentConfig
from cnnkit.env import import_keras


def create_augmenter(cfg: AugmentConfig, seed: int) -> Any | None:
    """A ``keras.Sequential`` of random layers, or None when augmentation does nothing."""
    keras = import_keras()
    layers: list[Any] = []
    # float32 even under mixed precision: interpolating pixel values in bfloat16 would round them.
    common = {"dtype": "float32"}
    if cfg.enabled and cfg.rotation > 0:
        layers.append(
            keras.layers.RandomRotation(
                cfg.rotation / 360.0,  # Keras takes a fraction of a full turn
                fill_mode=cfg.fill_mode,
                interpolation="bilinear",
                seed=seed,
                **common,
            )
        )
    if cfg.enabled and cfg.shift > 0:
        layers.append(
            keras.layers.RandomTranslation(
                cfg.shift, cfg.shift, fill_mode=cfg.fill_mode, seed=seed + 1, **common
            )
        )
    if cfg.enabled and cfg.flip and not cfg.alternate_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 2, **common))
    if not layers:
        return None
    return keras.Sequential(layers, name="augment")


class EpochAugmenter:
    """Per-epoch augmentation of the uint8 training images, vectorised in NumPy.

    ``augment.translate``: a random crop of each image reflect-padded by that many pixels.
    ``augment.alternate_flip``: a fixed random half of the images is flipped, and every image is
    flipped again on odd epochs. Both are pure functions of (seed, epoch, image index), so a
    resumed run sees the same images as an uninterrupted one, and both are backend-independent.
    ``__call__(epoch)`` augments the whole array at once; ``batch(images, index, epoch)`` the
    images ``index`` only, identically (for images read from disk a batch at a time).
    """

    def __init__(self, images: Any, cfg: AugmentConfig, seed: int) -> None:
        self.images = images
        self.seed = seed
        self.pad = cfg.translate if cfg.enabled else 0
        self.alternate_flip = cfg.enabled and cfg.flip and cfg.alternate_flip
        p = self.pad
        # Padded once, when the images are in memory: each epoch only slices it.
        self.padded = (
            np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
            if p and isinstance(images, np.ndarray)
            else None
        )
        rng = np.random.default_rng([seed, 0xF11B])
        self.flipped = rng.random(len(images)) < 0.5 if self.alternate_flip else None

    @property
    def active(self) -> bool:
        return bool(self.pad or self.alternate_flip)

    def _offsets(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, 0xC209])
        n = len(self.images)
        dy = rng.integers(0, 2 * self.pad + 1, size=n)
        dx = rng.integers(0, 2 * self.pad + 1, size=n)
        return dy, dx

    def __call__(self, epoch: int) -> np.ndarray:
        if not isinstance(self.images, np.ndarray):
            raise TypeError("whole-array augmentation needs images in memory; use batch()")
        return self.batch(self.images, np.arange(len(self.images)), epoch, self.padded)

    def batch(
        self, images: np.ndarray, index: np.ndarray, epoch: int, padded: np.ndarray | None = None
    ) -> np.ndarray:
        """``images`` (the training images ``index``, already read) augmented for ``epoch``."""
        x = images
        if self.pad:
            p = self.pad
            if padded is None:
                padded = np.pad(images, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
            h, w = x.shape[1:3]
            dy, dx = (d[index] for d in self._offsets(epoch))
            out = np.empty_like(x)
            for oy in range(2 * p + 1):  # one slice per offset: (2p+1)^2 copies in all
                for ox in range(2 * p + 1):
                    rows = np.flatnonzero((dy == oy) & (dx == ox))
                    out[rows] = padded[rows, oy : oy + h, ox : ox + w]
            x = out
        if self.flipped is not None:
            flip = self.flipped[index] ^ bool(epoch % 2)
            x = x.copy() if x is images else x
            x[flip] = x[flip, :, ::-1]
        return x
