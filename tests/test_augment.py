from __future__ import annotations

import numpy as np

from cnnkit.config import AugmentConfig
from cnnkit.data.augment import EpochAugmenter, create_augmenter


def test_default_is_the_tutorials_image_data_generator() -> None:
    augmenter = create_augmenter(AugmentConfig(), seed=0)
    rotation, translation, flip = augmenter.layers
    assert type(rotation).__name__ == "RandomRotation"
    assert np.isclose(rotation.factor[1], 15 / 360)  # +-15 degrees, as a fraction of a turn
    assert rotation.fill_mode == "nearest" and rotation.interpolation == "bilinear"
    assert type(translation).__name__ == "RandomTranslation"
    assert translation.height_factor == 0.1 and translation.width_factor == 0.1
    assert type(flip).__name__ == "RandomFlip" and flip.mode == "horizontal"


def test_changes_images_in_training_only() -> None:
    augmenter = create_augmenter(AugmentConfig(), seed=0)
    x = np.random.default_rng(0).integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(augmenter(x, training=False)), x.astype(np.float32))
    changed = np.asarray(augmenter(x, training=True))
    assert changed.shape == x.shape and changed.dtype == np.float32
    # Most images move; values stay in the pixel range ('nearest' fill invents no new extremes).
    moved = np.abs(changed - x).reshape(16, -1).mean(axis=1) > 1
    assert moved.sum() >= 12
    assert changed.min() >= 0 and changed.max() <= 255


def test_disabled_or_empty_augmentation_is_none() -> None:
    assert create_augmenter(AugmentConfig(enabled=False), seed=0) is None
    assert create_augmenter(AugmentConfig(rotation=0, shift=0, flip=False), seed=0) is None
    only_flip = create_augmenter(AugmentConfig(rotation=0, shift=0), seed=0)
    assert [type(layer).__name__ for layer in only_flip.layers] == ["RandomFlip"]


def test_epoch_augmenter_translates_and_alternates_flips() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
    cfg = AugmentConfig(rotation=0, shift=0, translate=2, alternate_flip=True)
    augment = EpochAugmenter(images, cfg, seed=3)
    first, again = augment(0), augment(0)
    assert np.array_equal(first, again)  # a pure function of (seed, epoch)
    assert not np.array_equal(first, augment(2))  # new crops each epoch
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for i in range(40):  # every image is an 8x8 window of its padded self, mirrored or not
        windows = [
            padded[i, y : y + 8, x : x + 8][:, ::flip]
            for y in range(5)
            for x in range(5)
            for flip in (1, -1)
        ]
        assert any(np.array_equal(first[i], w) for w in windows)
    # Flips only: epoch 1 flips exactly the images that epoch 0 did not.
    flips = EpochAugmenter(images, AugmentConfig(rotation=0, shift=0, alternate_flip=True), seed=3)
    even, odd = flips(0), flips(1)
    flipped_even = np.array([np.array_equal(even[i], images[i, :, ::-1]) for i in range(40)])
    flipped_odd = np.array([np.array_equal(odd[i], images[i, :, ::-1]) for i in range(40)])
    assert np.array_equal(flipped_odd, ~flipped_even) and 5 < flipped_even.sum() < 35
    assert not EpochAugmenter(images, AugmentConfig(), seed=0).active  # the tutorial's is in-graph
