"""cnnkit.models.fast_cnn: the patch-whitening layer and how the network starts."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit.env import import_keras

keras = import_keras()


def _correlated_images(n: int = 300, size: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth, channel-correlated images: their 2x2 patches are far from white."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, size + 3, size + 3, 1))
    smooth = (base[:, :-3, :-3] + base[:, 1:-2, 1:-2] + base[:, 2:-1, 2:-1] + base[:, 3:, 3:]) / 4
    colour = smooth * np.array([1.0, 0.8, 0.6]) + 0.2 * rng.normal(size=(n, size, size, 3))
    return np.clip(128 + 60 * colour, 0, 255).astype(np.uint8)


def test_whitening_gives_identity_covariance_on_its_own_patches() -> None:
    from cnnkit.models.fast_cnn import PatchWhitening

    images = _correlated_images()
    layer = PatchWhitening(2)
    layer.adapt(images)
    out = np.asarray(layer(images.astype("float32")), dtype=np.float64)
    assert out.shape == (300, 15, 15, 24)
    half = out[..., :12] - np.asarray(layer.bias)[:12]  # the other 12 filters are the negatives
    np.testing.assert_allclose(out[..., 12:], -out[..., :12], atol=1e-4)
    flat = half.reshape(-1, 12)
    covariance = flat.T @ flat / len(flat)
    # eps = 5e-4 keeps the smallest directions slightly under 1; all others are 1, off-diagonals 0.
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 0.02
    assert np.all(np.diag(covariance) > 0.9) and np.all(np.diag(covariance) < 1.01)
    raw = images[:, :2, :2].reshape(300, -1).astype(np.float64)
    assert np.corrcoef(raw.T)[0, 1] > 0.5  # the input was strongly correlated


def test_grey_pictures_stored_as_rgb_leave_no_dead_channel() -> None:
    """A folder of grey pictures is decoded as RGB: 8 of the 12 patch directions never vary.
    Every channel the whitening makes still varies (no zero channel for the identity-started
    convolutions to carry to BatchNorm, whose gradients were then 1e31: NaN in bfloat16), and
    one training step's gradients stay small."""
    import tensorflow as tf

    from cnnkit.models import create_model
    from cnnkit.models.fast_cnn import PatchWhitening
    from cnnkit.trainer import adapt_layers

    grey = _correlated_images()[..., :1].repeat(3, axis=-1)
    layer = PatchWhitening(2)
    layer.adapt(grey)
    out = np.asarray(layer(grey.astype("float32")), dtype=np.float64)
    assert out.reshape(-1, 24).std(axis=0).min() > 0.1
    net = create_model("fast_cnn", (16, 16, 3), 10)
    adapt_layers(net, grey)
    labels = np.eye(10, dtype="float32")[np.arange(len(grey)) % 10]
    with tf.GradientTape() as tape:
        loss = keras.losses.categorical_crossentropy(
            labels, net(grey.astype("float32"), training=True)
        )
    gradients = tape.gradient(loss, net.trainable_variables)
    assert max(float(np.abs(np.asarray(g)).max()) for g in gradients) < 1e3


def test_whitening_kernel_is_frozen_and_saved(tmp_path: object) -> None:
    from cnnkit.models import create_model
    from cnnkit.trainer import adapt_layers

    model = create_model("fast_cnn", (32, 32, 3), 10)
    whiten = model.get_layer("whiten")
    assert [w.name for w in whiten.trainable_weights] == ["bias"]
    adapt_layers(model, _correlated_images(64, 32))
    path = f"{tmp_path}/m.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        np.asarray(again.get_layer("whiten").kernel), np.asarray(whiten.kernel)
    )


def test_fast_cnn_starts_as_the_recipe_starts() -> None:
    """PyTorch's initialisation scale, identity filters, BatchNorm keeping 0.6 of its average."""
    from cnnkit.models.fast_cnn import fast_cnn

    keras.utils.set_random_seed(0)
    model = fast_cnn((32, 32, 3), 10)
    kernel = np.asarray(model.get_layer("block2_conv1").kernel)  # (3, 3, 64, 256)
    centre = kernel[1, 1, :, :64]
    np.testing.assert_array_equal(centre, np.eye(64))
    np.testing.assert_array_equal(kernel[0, :, :, :64], 0.0)
    drawn = kernel[..., 64:]
    bound = 1 / np.sqrt(9 * 64)
    assert np.abs(drawn).max() <= bound and np.abs(drawn).max() > 0.95 * bound
    # A 3x3 "same" convolution whose filters are all identities passes its input through.
    square = model.get_layer("block1_conv2")
    x = np.random.default_rng(0).normal(size=(2, 15, 15, 64)).astype("float32")
    np.testing.assert_allclose(np.asarray(square(x)), x, atol=0.05)  # bf16 or fp32 policy
    assert np.abs(np.asarray(model.get_layer("head").kernel)).max() <= 1 / np.sqrt(256)
    norm = model.get_layer("block3_norm2")
    assert norm.momentum == pytest.approx(0.6) and not norm.scale
    mean = np.asarray(norm.moving_mean).copy()
    batch = np.random.default_rng(1).normal(5.0, 1.0, size=(64, 3, 3, 256)).astype("float32")
    norm(batch, training=True)
    np.testing.assert_allclose(
        np.asarray(norm.moving_mean), 0.6 * mean + 0.4 * batch.mean(axis=(0, 1, 2)), rtol=1e-3
    )
