"""The tutorial's network, layer for layer.

Three groups of [Conv2D(f, 3x3, relu, same) x2, MaxPooling2D(2), Dropout(0.25)] with f = 32, 64,
128, then Flatten, Dense(512, relu), Dropout(0.5) and a softmax over the classes.
"""

from __future__ import annotations

from typing import Any

from cnnkit.env import import_keras
from cnnkit.models.registry import register_model


@register_model
def seed_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    filters: tuple[int, ...] | list[int] = (32, 64, 128),
    dense: int = 512,
    dropout: float = 0.25,
    head_dropout: float = 0.5,
) -> Any:
    """The CNN of "build and train your first neural network with TensorFlow and Keras"."""
    keras = import_keras()
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)  # the tutorial's x / 255, in the model
    for group, width in enumerate(filters, start=1):
        for i in (1, 2):
            x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"conv{group}_{i}")(
                x
            )
        x = layers.MaxPooling2D(2, name=f"pool{group}")(x)
        x = layers.Dropout(dropout, name=f"dropout{group}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense, activation="relu", name="dense")(x)
    x = layers.Dropout(head_dropout, name="dropout_head")(x)
    # Softmax in float32 under mixed precision: probabilities must sum to one exactly enough.
    outputs = layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name="seed_cnn")
