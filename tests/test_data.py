"""The cnnkit.data package: stratified splits and subsets, the digits and generated datasets,
data.image_size, and an unknown dataset's name."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.config import DataConfig
from cnnkit.data import load_dataset
from cnnkit.data.base import Split, stratified_split, stratified_subset
from cnnkit.errors import ConfigError, DataError


def _split(n: int = 1000, classes: int = 10) -> Split:
    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, size=n)
    return Split(rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8), y)


def test_split_is_stratified_seeded_and_disjoint() -> None:
    data = _split()
    rest, held = stratified_split(data, 0.2, seed=1)
    assert held is not None
    assert len(held) == 200 and len(rest) == 800
    # Each class keeps its share (within one image) in the held-out part.
    for c in range(10):
        assert abs((held.y == c).sum() - 0.2 * (data.y == c).sum()) <= 1
    _again_rest, again_held = stratified_split(data, 0.2, seed=1)
    assert np.array_equal(again_held.x, held.x)
    _, other = stratified_split(data, 0.2, seed=2)
    assert other is not None and not np.array_equal(other.x, held.x)
    # No image is in both parts.
    keys = {bytes(x) for x in rest.x}
    assert not any(bytes(x) in keys for x in held.x)


def test_no_validation_split() -> None:
    rest, held = stratified_split(_split(), 0.0, seed=0)
    assert held is None and len(rest) == 1000


def test_subset_keeps_every_class() -> None:
    sub = stratified_subset(_split(), 100, seed=0)
    assert len(sub) == 100 and len(np.unique(sub.y)) == 10
    with pytest.raises(DataError, match="cannot hold all 10 classes"):
        stratified_subset(_split(), 5, seed=0)
    # Leaving out fewer images than there are classes (a budget that fits almost every image):
    # sklearn cannot stratify that, the subset is still drawn, seeded.
    near = stratified_subset(_split(), 995, seed=0)
    assert len(near) == 995 and len(np.unique(near.y)) == 10
    assert np.array_equal(stratified_subset(_split(), 995, seed=0).x, near.x)


def test_digits_and_synthetic() -> None:
    digits = load_dataset(DataConfig(name="digits"), seed=0)
    assert digits.input_shape == (8, 8, 1) and digits.num_classes == 10
    assert digits.train.x.dtype == np.uint8 and digits.train.x.max() == 255
    assert len(digits.train) + len(digits.val or []) + len(digits.test) == 1797
    other = load_dataset(DataConfig(name="digits"), seed=1)
    assert np.array_equal(digits.test.x, other.test.x)  # the test split does not move with the seed
    assert other.val is not None and digits.val is not None
    assert not np.array_equal(digits.val.y, other.val.y)
    synthetic = load_dataset(DataConfig(name="synthetic", val_split=0.1), seed=0)
    assert synthetic.input_shape == (32, 32, 3) and synthetic.class_names[0] == "red"


def test_unknown_dataset() -> None:
    with pytest.raises(ConfigError, match="did you mean 'digits'"):
        load_dataset(DataConfig(name="digitz"), seed=0)


def test_image_size_resizes_any_dataset() -> None:
    data = load_dataset(DataConfig(name="digits", image_size=16, val_split=0), seed=0)
    assert data.input_shape == (16, 16, 1)
    assert data.train.x.dtype == np.uint8
