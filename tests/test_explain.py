"""cnnkit.explain: Grad-CAM points at the evidence, also inside a pretrained backbone."""

from __future__ import annotations

import numpy as np


def _evidence_model(keras: object) -> object:
    """A network whose evidence for class 0 is exactly the image's brightness: a 1x1
    convolution copies the pixel (channel 0) or its negative (channel 1), averaged, then scored."""
    layers = keras.layers  # type: ignore[attr-defined]
    inputs = keras.Input((8, 8, 1))  # type: ignore[attr-defined]
    x = layers.Conv2D(2, 1, use_bias=False, activation="relu", name="features",
                      kernel_initializer=keras.initializers.Constant([[[[1.0, -1.0]]]]))(inputs)  # type: ignore[attr-defined]  # fmt: skip
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(2, activation="softmax", kernel_initializer="identity")(x)
    return keras.Model(inputs, outputs)  # type: ignore[attr-defined]


def test_gradcam_points_at_the_evidence() -> None:
    import keras

    from cnnkit.explain import class_activation_maps

    images = np.zeros((2, 8, 8, 1), np.uint8)
    images[0, 1:3, 5:7] = 200  # a bright square top right
    images[1, 4:8, 0:2] = 90  # a dim bar bottom left
    images[1, 5, 1] = 180
    maps, layer = class_activation_maps(_evidence_model(keras), images, np.array([0, 0]))
    assert layer == "features" and maps.shape == (2, 8, 8)
    # For class 0 all weight is on channel 0, the pixel itself: the map is the image, scaled to 1.
    expected = images[..., 0] / images[..., 0].max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(maps, expected, atol=1e-5)


def test_gradcam_finds_the_feature_map_inside_a_backbone() -> None:
    import keras

    from cnnkit.explain import class_activation_maps, feature_layer

    layers = keras.layers
    inner_in = keras.Input((16, 16, 3))
    h = layers.Conv2D(4, 3, padding="same", activation="relu", name="inner_conv")(inner_in)
    backbone = keras.Model(inner_in, layers.GlobalAveragePooling2D()(h), name="backbone")
    inputs = keras.Input((16, 16, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    model = keras.Model(inputs, layers.Dense(3, activation="softmax")(backbone(x)))
    layer, nested = feature_layer(model)
    assert layer.name == "inner_conv" and nested is backbone
    images = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    maps, name = class_activation_maps(model, images, np.array([0, 1, 2]))
    assert name == "inner_conv" and maps.shape == (3, 16, 16)
    assert maps.min() >= 0 and maps.max() <= 1
