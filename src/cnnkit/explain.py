"""Class-activation heatmaps (Grad-CAM, Selvaraju et al. 2017): where in the image the evidence
for a class lies, as the last convolutional feature map sees it.

For class c: the gradient of log p(c) with respect to the feature map, averaged over the map's
positions, weights its channels; their weighted sum, through ReLU and scaled to [0, 1], is the
heatmap. (log p(c) rather than the pre-softmax score, because cnnkit's models end in a softmax
layer; its gradient is the score's minus the probability-weighted mean of all scores, so the map
shows evidence for c *against* the other classes.)

Gradients need the backend's own machinery: implemented for TensorFlow (the default backend).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError


class ExplainError(CnnkitError):
    """The model or the backend does not allow class-activation maps."""


def _is_feature_map(layer: Any) -> bool:
    """A 4-D output with more than one position, from a layer that computes (not a pooling or
    dropout layer, which only move or drop what the layer before computed)."""
    from keras import layers

    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):
        return False
    skip = (layers.Dropout, layers.MaxPooling2D, layers.AveragePooling2D, layers.SpatialDropout2D)
    return len(shape) == 4 and (shape[1] or 0) * (shape[2] or 0) > 1 and not isinstance(layer, skip)


def feature_layer(model: Any) -> tuple[Any, Any | None]:
    """The last feature map's layer, and the nested model holding it (None: ``model`` itself).

    A pretrained backbone is one layer of cnnkit's transfer models, with its pooling inside; its
    own last feature map is used then.
    """
    for layer in reversed(model.layers):
        if _is_feature_map(layer):
            return layer, None
        if hasattr(layer, "layers"):  # a nested model, such as a backbone
            inner = next((x for x in reversed(layer.layers) if _is_feature_map(x)), None)
            if inner is not None:
                return inner, layer
    raise ExplainError(f"model {model.name!r} has no convolutional feature map to explain")


def class_activation_maps(
    model: Any, images: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, str]:
    """Grad-CAM heatmaps ``(N, H, W)`` in [0, 1] at the images' size, for ``classes[i]`` of
    image i, and the name of the layer they come from."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ExplainError(
            f"class-activation maps are computed on the TensorFlow backend, not {backend}: run "
            f"it with KERAS_BACKEND=tensorflow (the run's model.keras is the same on every backend)"
        )
    import tensorflow as tf

    layer, nested = feature_layer(model)
    x = tf.convert_to_tensor(np.asarray(images, dtype=np.float32))
    with tf.GradientTape() as tape:
        if nested is None:
            probe = keras.Model(model.inputs, [layer.output, model.output])
            features, probabilities = probe(x, training=False)
        else:
            features, probabilities = _through_nested(model, nested, layer, x)
        chosen = tf.gather(probabilities, np.asarray(classes), axis=1, batch_dims=1)
        score = tf.reduce_sum(tf.math.log(tf.clip_by_value(tf.cast(chosen, "float32"), 1e-7, 1)))
    gradients = tape.gradient(score, features)
    if gradients is None:
        raise ExplainError(f"no gradient reaches layer {layer.name!r}")
    features = tf.cast(features, "float32").numpy()
    weights = tf.cast(gradients, "float32").numpy().mean(axis=(1, 2))  # (N, channels)
    maps = np.maximum(np.einsum("nhwc,nc->nhw", features, weights), 0.0)
    peak = maps.max(axis=(1, 2), keepdims=True)
    maps = np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)
    return resize_maps(maps, images.shape[1:3]), layer.name


def _through_nested(model: Any, nested: Any, layer: Any, x: Any) -> tuple[Any, Any]:
    """Run ``model``, a chain of layers, with ``nested`` also giving out ``layer``'s feature map.

    Checked against the model's own output, so that a graph that is not a chain is refused
    rather than explained wrongly.
    """
    import keras

    inner = keras.Model(nested.inputs, [layer.output, nested.output])
    features, h = None, x
    for top in model.layers:
        if isinstance(top, keras.layers.InputLayer):
            continue
        if top is nested:
            features, h = inner(h, training=False)
        else:
            h = top(h, training=False)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    if features is None or not np.allclose(
        keras.ops.convert_to_numpy(h), expected, atol=1e-3, rtol=1e-2
    ):
        raise ExplainError(f"model {model.name!r} is not a chain of layers around its backbone")
    return features, h


def overlay(image: np.ndarray, heatmap: np.ndarray | None, alpha: float = 0.45) -> np.ndarray:
    """A uint8 image ``(H, W, 1 or 3)`` with a heatmap ``(H, W)`` in [0, 1] blended over it in
    jet colours: float RGB in [0, 1] (the report's pictures and the service's answers). Without
    a heatmap, the image alone."""
    from matplotlib import colormaps

    rgb = image.astype(np.float32) / 255.0
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    if heatmap is None:
        return rgb[..., :3]
    colours = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3]
    return (1 - alpha) * rgb[..., :3] + alpha * colours


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear enlargement of each map to the image size (PIL, float images)."""
    from PIL import Image

    height, width = int(size[0]), int(size[1])
    out = np.empty((len(maps), height, width), dtype=np.float32)
    for i, m in enumerate(maps):
        image = Image.fromarray(m.astype(np.float32), mode="F")
        out[i] = np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))
    return np.clip(out, 0.0, 1.0)
