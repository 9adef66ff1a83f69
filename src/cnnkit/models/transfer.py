"""Pretrained backbones from keras.applications, with a new head for the dataset's classes.

Each model takes raw pixels 0..255 like every cnnkit model: the backbone's own preprocessing
(ResNet50's caffe-style BGR mean subtraction, MobileNetV2's [-1, 1]; EfficientNet has its own
inside) is a layer of the model, grey images are repeated to three channels, and images smaller
than 32x32 are enlarged to it (the backbones' minimum). The backbone is the layer named
"backbone" (:func:`pretrained_backbone` finds it for the recipes); the trainer freezes it for the
first ``train.freeze_epochs`` epochs and then fine-tunes its top, its BatchNorm layers always frozen (in Keras 3 a non-trainable BatchNorm runs
in inference mode, so their ImageNet statistics never move; the ``training=False`` of the call
alone does not ensure that when the model is called in training mode). With
``weights=none`` the same network trains from scratch as a whole (layer "features", BatchNorm
learning as usual): random features are not worth freezing.

``weights``: "imagenet" (Keras downloads the file once into ~/.keras/models, checking its hash),
"none" (random), or the path of a weights file for the backbone without its top.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.env import import_keras
from cnnkit.errors import ConfigError, DataError
from cnnkit.models.registry import register_model

keras = import_keras()
ops = keras.ops
MIN_SIZE = 32
BACKBONE = "backbone"  # the pretrained part; cnnkit.trainer freezes, then fine-tunes it


def pretrained_backbone(net: Any) -> Any | None:
    """The pretrained backbone of a transfer model (a layer of ``net``), or None."""
    return next((layer for layer in net.layers if layer.name == BACKBONE), None)


@keras.saving.register_keras_serializable(package="cnnkit")
class PixelTransform(keras.layers.Layer):  # type: ignore[misc]
    """``x * scale + offset`` per channel, after optionally reversing the channels (RGB to BGR)
    and repeating a grey channel three times: a backbone's preprocessing, inside the model."""

    def __init__(
        self,
        scale: float = 1.0,
        offset: tuple[float, ...] | list[float] = (0.0, 0.0, 0.0),
        reverse_channels: bool = False,
        to_rgb: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.offset = [float(v) for v in offset]
        self.reverse_channels = reverse_channels
        self.to_rgb = to_rgb

    def call(self, inputs: Any) -> Any:
        x = ops.cast(inputs, self.compute_dtype)
        if self.to_rgb:
            x = ops.repeat(x, 3, axis=-1)
        if self.reverse_channels:
            x = ops.flip(x, axis=-1)
        return x * self.scale + ops.convert_to_tensor(self.offset, dtype=x.dtype)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (*input_shape[:-1], 3)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "scale": self.scale,
            "offset": self.offset,
            "reverse_channels": self.reverse_channels,
            "to_rgb": self.to_rgb,
        }


@dataclass(frozen=True)
class _Backbone:
    build: Callable[..., Any]
    scale: float
    offset: tuple[float, float, float]
    reverse_channels: bool


def _backbones() -> dict[str, _Backbone]:
    apps = keras.applications
    return {
        # Caffe-style: BGR, minus the ImageNet mean per channel (keras.applications.resnet50).
        "resnet50": _Backbone(apps.ResNet50, 1.0, (-103.939, -116.779, -123.68), True),
        # Scaled to [-1, 1] (keras.applications.mobilenet_v2.preprocess_input).
        "mobilenet_v2": _Backbone(apps.MobileNetV2, 1 / 127.5, (-1.0, -1.0, -1.0), False),
        # Rescales and normalises inside the network itself: it takes 0..255.
        "efficientnet_b0": _Backbone(apps.EfficientNetB0, 1.0, (0.0, 0.0, 0.0), False),
    }


def keras_cache() -> Path:
    """Where keras.applications keeps downloaded weights."""
    import os

    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def imagenet_cached(kind: str) -> bool:
    """Whether some ImageNet weights file (without top) of ``kind`` was downloaded already."""
    return any(keras_cache().glob(f"*{kind.split('_')[0]}*no*top*.h5"))


def resolve_weights(weights: str, kind: str = "") -> str | None:
    """What keras.applications takes: "imagenet", None, or a file's path."""
    import os

    from cnnkit.data.download import OFFLINE_ENV

    if weights in ("auto", "imagenet"):
        offline = os.environ.get(OFFLINE_ENV, "") not in ("", "0")
        if offline and not imagenet_cached(kind):
            raise DataError(
                f"the ImageNet weights of {kind} are not in {keras_cache()} and downloads are "
                f"disabled ({OFFLINE_ENV} is set); pass model.weights=PATH to a local weights "
                f"file or model.weights=none"
            )
        return "imagenet"
    if weights == "none":
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model.weights={weights}: no such file; give imagenet, none or a weights file"
        )
    return str(path)


def _transfer(
    kind: str, input_shape: tuple[int, int, int], num_classes: int, weights: str, dropout: float
) -> Any:
    spec = _backbones()[kind]
    height, width, channels = input_shape
    if channels not in (1, 3):
        raise ConfigError(f"{kind} takes RGB or grey images, not {channels} channels")
    inputs = keras.Input(shape=input_shape, name="image")
    x = PixelTransform(
        spec.scale, spec.offset, spec.reverse_channels, to_rgb=channels == 1, name="preprocess"
    )(inputs)
    size = (max(height, MIN_SIZE), max(width, MIN_SIZE))
    if size != (height, width):
        x = keras.layers.Resizing(*size, name="enlarge")(x)
    source = resolve_weights(weights, kind)
    try:
        backbone = spec.build(
            include_top=False, weights=source, input_shape=(*size, 3), pooling="avg"
        )
    except (ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model.weights={weights} does not fit {kind}: {reason}") from None
    except Exception as exc:  # a failed download surfaces as URLError, HTTPError or others
        raise DataError(
            f"could not get the ImageNet weights of {kind} ({type(exc).__name__}: {exc}); "
            f"when offline, pass model.weights=PATH to a local weights file or model.weights=none"
        ) from None
    if source is None:
        # Random weights: a network trained from scratch like any other; its BatchNorm layers
        # learn their statistics, and there is nothing to freeze.
        backbone.name = "features"
        x = backbone(x)
    else:
        backbone.name = BACKBONE
        x = backbone(x, training=False)  # and cnnkit.trainer keeps its BatchNorm frozen
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=kind)


@register_model
def resnet50(
    input_shape: tuple[int, int, int], num_classes: int, weights: str = "auto", dropout: float = 0.2
) -> Any:
    """ResNet50 (keras.applications) with a new softmax head."""
    return _transfer("resnet50", input_shape, num_classes, weights, dropout)


@register_model
def mobilenet_v2(
    input_shape: tuple[int, int, int], num_classes: int, weights: str = "auto", dropout: float = 0.2
) -> Any:
    """MobileNetV2 (keras.applications, width 1.0) with a new softmax head."""
    return _transfer("mobilenet_v2", input_shape, num_classes, weights, dropout)


@register_model
def efficientnet_b0(
    input_shape: tuple[int, int, int], num_classes: int, weights: str = "auto", dropout: float = 0.2
) -> Any:
    """EfficientNetB0 (keras.applications) with a new softmax head."""
    return _transfer("efficientnet_b0", input_shape, num_classes, weights, dropout)
