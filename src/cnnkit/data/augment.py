"""Training-time augmentation built from Keras preprocessing layers.

The default equals the tutorial's ``ImageDataGenerator(rotation_range=15, width_shift_range=0.1,
height_shift_range=0.1, horizontal_flip=True)`` (fill mode 'nearest', bilinear interpolation).
The layers run inside the training graph on whole batches, on any backend, and are not part of the
saved model: prediction never sees them.
"""

from __future__ import annotations

from typing import Any

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
    if cfg.enabled and cfg.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 2, **common))
    if not layers:
        return None
    return keras.Sequential(layers, name="augment")
