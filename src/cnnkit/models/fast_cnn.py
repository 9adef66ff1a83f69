"""A fast CIFAR-10 network after the public airbench94 write-up (Keller Jordan, 2024).

What makes it learn in ten epochs, and why each number is what it is:
- a first 2x2 convolution whose 24 filters whiten the image patches: eigenvectors of the patch
  covariance of the training images, scaled by 1/sqrt(eigenvalue), and their negatives (so that
  the GELU after it keeps both signs). It is fitted by ``adapt(images)`` before training and never
  trained; only its bias is, for the first epochs (the recipe freezes it through the optimizer);
- three groups [conv 3x3, max-pool 2, BatchNorm, GELU, conv 3x3, BatchNorm, GELU] of widths 64,
  256, 256: most of the work happens at 15x15 and 7x7;
- BatchNorm without a scale (it would only fight weight decay) and a fast-moving average: the
  running statistics keep 0.6 of their old value at each step (Keras's momentum 0.6, PyTorch's
  0.4), eps 1e-12;
- PyTorch's default initialisation (uniform, bound 1/sqrt(fan_in)): with BatchNorm after every
  convolution the scale of the weights sets their effective learning rate, and the recipe's rates
  were tuned for it. The first ``in`` filters of each 3x3 convolution start as identities
  (output channel i copies input channel i), an implicit residual connection at the start;
- a final 3x3 max-pool, a bias-free linear layer, and logits scaled by 1/9, which keeps the
  softmax soft early in training (a temperature).

Input: raw pixels 0..255; the whitening layer normalises them with the training set's mean and
standard deviation, so the model carries its own preprocessing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit.env import import_keras
from cnnkit.models.registry import register_model

keras = import_keras()
ops = keras.ops


@keras.saving.register_keras_serializable(package="cnnkit")
def gelu_tanh(x: Any) -> Any:
    """GELU with the tanh approximation: on this CPU it trains faster than the exact erf form."""
    return keras.activations.gelu(x, approximate=True)


def torch_uniform() -> Any:
    """PyTorch's default initialisation of convolution and linear weights: uniform in
    +-1/sqrt(fan_in) (its kaiming_uniform with a=sqrt(5))."""
    return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform")


@keras.saving.register_keras_serializable(package="cnnkit")
class PartialIdentity(keras.initializers.Initializer):  # type: ignore[misc]
    """A convolution kernel ``(kh, kw, in, out)`` drawn as PyTorch draws it, whose first
    ``min(in, out)`` filters are then identities: output channel i starts as input channel i."""

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        kh, kw, channels_in, channels_out = shape
        n = min(channels_in, channels_out)
        identity = np.zeros(shape, dtype="float32")
        identity[kh // 2, kw // 2, np.arange(n), np.arange(n)] = 1.0
        keep = np.ones(shape, dtype="float32")
        keep[..., :n] = 0.0
        drawn = torch_uniform()(shape, dtype=dtype)
        return drawn * ops.cast(keep, drawn.dtype) + ops.cast(identity, drawn.dtype)


# A patch direction with less variance than this share of the largest is taken as none at all.
NULL_VARIANCE = 1e-9


@keras.saving.register_keras_serializable(package="cnnkit")
class PatchWhitening(keras.layers.Layer):  # type: ignore[misc]
    """Normalise pixels, then a frozen convolution that whitens ``kernel_size`` patches.

    ``adapt(images)`` fits the mean, standard deviation and whitening filters to uint8 images
    ``(N, H, W, C)``; the output has ``2 * C * kernel_size**2`` channels (each filter and its
    negative) and is ``kernel_size - 1`` pixels smaller (no padding).
    """

    def __init__(self, kernel_size: int = 2, eps: float = 5e-4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.eps = eps

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = int(input_shape[-1])  # type: ignore[arg-type]
        k = self.kernel_size
        self.filters = 2 * channels * k * k
        zeros, ones = keras.initializers.Zeros(), keras.initializers.Ones()
        self.mean = self.add_weight(
            shape=(channels,), initializer=zeros, trainable=False, name="mean"
        )
        self.std = self.add_weight(shape=(channels,), initializer=ones, trainable=False, name="std")
        self.kernel = self.add_weight(
            shape=(k, k, channels, self.filters), initializer="glorot_uniform", trainable=False,
            name="kernel",
        )  # fmt: skip
        self.bias = self.add_weight(shape=(self.filters,), initializer=zeros, name="bias")

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype) * (1.0 / 255.0)
        x = (x - ops.cast(self.mean, x.dtype)) / ops.cast(self.std, x.dtype)
        y = ops.conv(x, ops.cast(self.kernel, x.dtype), padding="valid")
        return y + ops.cast(self.bias, y.dtype)

    def adapt(self, images: np.ndarray, max_images: int = 5000) -> None:
        """Fit normalisation and whitening to uint8 images (the first ``max_images`` of them)."""
        x = np.asarray(images[:max_images], dtype=np.float64) / 255.0
        if not self.built:
            self.build(x.shape)
        mean = x.mean(axis=(0, 1, 2))
        std = x.std(axis=(0, 1, 2)) + 1e-8
        x = (x - mean) / std
        k = self.kernel_size
        windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
        # (N, H', W', C, kh, kw) -> rows laid out as the kernel's (kh, kw, C) axes.
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * x.shape[-1])
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        filters = eigenvectors / np.sqrt(np.maximum(eigenvalues, 0.0) + self.eps)  # columns whiten
        # Directions the images never vary in (grey pictures stored as RGB: the differences
        # between channels) would make channels that are 0 everywhere, and the identity-started
        # convolutions carry them to every BatchNorm, whose epsilon (1e-12) turns their
        # gradients into 1e31 (NaN in bfloat16). They take the strongest directions' filters
        # again instead: a repeated channel varies, a dead one does not.
        null = eigenvalues <= NULL_VARIANCE * eigenvalues.max()
        if null.any() and not null.all():
            strongest = np.flatnonzero(~null)[::-1]  # eigh: ascending eigenvalues
            filters[:, null] = filters[:, np.resize(strongest, int(null.sum()))]
        kernel = np.concatenate([filters, -filters], axis=1).reshape(k, k, x.shape[-1], -1)
        self.mean.assign(mean.astype("float32"))
        self.std.assign(std.astype("float32"))
        self.kernel.assign(kernel.astype("float32"))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        n, h, w, c = input_shape
        k = self.kernel_size
        shrink = lambda d: None if d is None else d - k + 1  # noqa: E731
        return n, shrink(h), shrink(w), 2 * int(c) * k * k  # type: ignore[arg-type]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kernel_size": self.kernel_size, "eps": self.eps}


def _group(x: Any, width: int, momentum: float, name: str) -> Any:
    layers = keras.layers
    norm = {"momentum": momentum, "epsilon": 1e-12, "scale": False}  # momentum: share of the old
    conv = {"padding": "same", "use_bias": False, "kernel_initializer": PartialIdentity()}
    x = layers.Conv2D(width, 3, **conv, name=f"{name}_conv1")(x)
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = layers.BatchNormalization(**norm, name=f"{name}_norm1")(x)
    x = layers.Activation(gelu_tanh, name=f"{name}_gelu1")(x)
    x = layers.Conv2D(width, 3, **conv, name=f"{name}_conv2")(x)
    x = layers.BatchNormalization(**norm, name=f"{name}_norm2")(x)
    return layers.Activation(gelu_tanh, name=f"{name}_gelu2")(x)


@register_model
def fast_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    widths: tuple[int, ...] | list[int] = (64, 256, 256),
    batchnorm_momentum: float = 0.6,
    logit_scale: float = 1 / 9,
) -> Any:
    """A whitened, BatchNorm-ed three-group CNN for fast training (airbench94's design)."""
    from cnnkit.errors import ConfigError

    if min(input_shape[:2]) < 16:
        raise ConfigError(
            f"fast_cnn needs images of 16x16 or more, not {input_shape[0]}x{input_shape[1]}; "
            f"use model.name=seed_cnn"
        )
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, name="image")
    x = PatchWhitening(2, name="whiten")(inputs)
    x = layers.Activation(gelu_tanh, name="whiten_gelu")(x)
    for i, width in enumerate(widths, start=1):
        x = _group(x, width, batchnorm_momentum, f"block{i}")
    # Pool whatever is left (3x3 for 32x32 inputs) to one value per channel.
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    head = layers.Dense(
        num_classes, use_bias=False, kernel_initializer=torch_uniform(), name="head"
    )
    x = head(x)
    x = layers.Rescaling(logit_scale, name="temperature")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="fast_cnn")
