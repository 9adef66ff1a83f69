"""scikit-learn's bundled 8x8 handwritten digits (1,797 images): real data that needs no download."""

from __future__ import annotations

import numpy as np

from cnnkit.data.base import Source, Split, stratified_split

# The digits come without a test set; this one is fixed (not the run's seed) so runs compare.
TEST_FRACTION = 0.2
TEST_SEED = 0


def load() -> Source:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Pixel values are 0..16; stretched to 0..255 so that every model sees the usual uint8 range.
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., np.newaxis]
    y = bunch.target.astype(np.int64)
    train, test = stratified_split(Split(x, y), TEST_FRACTION, TEST_SEED)
    assert test is not None
    return Source(train, test, tuple(str(d) for d in range(10)), "sklearn.datasets.load_digits")
