"""Pure model factories: ``(input_shape, num_classes, **hparams) -> keras.Model``, looked up by
name in the registry (:mod:`cnnkit.models.registry`), and what recipes ask of a model.

Every model takes raw pixel values (0..255, any numeric dtype): rescaling lives inside the model,
so a saved model needs nothing but images. Factories do no I/O.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

from cnnkit.errors import ConfigError, did_you_mean
from cnnkit.models.registry import Factory, register_model, registered

__all__ = [
    "BUILTIN",
    "ModelParts",
    "check_hparams",
    "check_weights",
    "count_flops",
    "create_model",
    "fetch_weights",
    "get_factory",
    "list_models",
    "model_hparams",
    "model_parts",
    "register_model",
    "takes_weights",
]

# The modules of cnnkit's own models, imported when a model is first looked up (they import
# Keras); each registers its factories (calibration: the saved models' last layer, for loading).
BUILTIN = ("seed_cnn", "fast_cnn", "transfer", "calibration")


def _load_builtin() -> dict[str, Factory]:
    for module in BUILTIN:
        importlib.import_module(f"cnnkit.models.{module}")
    return registered()


def list_models() -> list[str]:
    """The registered model names (``cnnkit models`` shows them with their parameters)."""
    return sorted(_load_builtin())


def get_factory(name: str) -> Factory:
    """The factory registered as ``name`` (a ConfigError naming the closest one otherwise)."""
    factories = _load_builtin()
    if name not in factories:
        raise ConfigError(f"unknown model model.name={name!r}{did_you_mean(name, factories)}")
    return factories[name]


def model_hparams(name: str) -> dict[str, Any]:
    """The keyword arguments a model accepts, with their defaults."""
    signature = inspect.signature(get_factory(name))
    return {
        p.name: p.default
        for p in list(signature.parameters.values())[2:]
        if p.default is not inspect.Parameter.empty and p.name != "weights"  # model.weights
    }


def takes_weights(name: str) -> bool:
    """Whether the model can start from pretrained weights (``model.weights``)."""
    return "weights" in inspect.signature(get_factory(name)).parameters


def check_hparams(name: str, params: dict[str, Any]) -> None:
    """Refuse unknown ``model.params`` keys before anything expensive happens."""
    known = model_hparams(name)
    for key in params:
        if key not in known:
            raise ConfigError(
                f"model {name} has no parameter model.params.{key}"
                f"{did_you_mean(key, known) if known else '; it takes none'}"
            )


def check_weights(name: str, weights: str) -> None:
    """Refuse a ``model.weights`` that cannot work, before anything is built or written."""
    if takes_weights(name):
        from cnnkit.models.transfer import resolve_weights

        resolve_weights(weights, name)  # a missing file, or ImageNet offline without a copy
        return
    if weights not in ("auto", "none"):
        pretrained = [m for m in list_models() if takes_weights(m)]
        raise ConfigError(
            f"model {name} has no pretrained weights (model.weights={weights}); "
            f"use model.weights=auto, or one of {', '.join(pretrained)}"
        )


def fetch_weights(
    name: str, weights: str, input_shape: tuple[int, int, int], num_classes: int
) -> None:
    """Download pretrained weights now (by building the model once), so that a failed download
    is refused before a run folder exists. Nothing happens when they are cached or not asked."""
    if not takes_weights(name) or weights not in ("auto", "imagenet"):
        return
    from cnnkit.models.transfer import imagenet_cached

    if not imagenet_cached(name):
        create_model(name, input_shape, num_classes, weights)


def create_model(
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    weights: str = "auto",
    **params: Any,
) -> Any:
    """Build a registered model. Raises ConfigError for an unknown name or parameter.

    ``weights`` (model.weights) goes to the models that take pretrained weights.
    """
    check_hparams(name, params)
    check_weights(name, weights)
    extra = {"weights": weights} if takes_weights(name) else {}
    try:
        return get_factory(name)(tuple(input_shape), int(num_classes), **extra, **params)
    except (ValueError, TypeError) as exc:  # a parameter value the layers cannot take
        if not params:
            raise
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"model {name} cannot be built with model.params {params} ({reason})"
        ) from None


@dataclass(frozen=True)
class ModelParts:
    """What training recipes treat specially, as a model declares it (:func:`model_parts`).

    Recipes ask for these instead of matching layer or variable names, so that a model can name
    its layers as it likes and a new model states what it has.
    """

    backbone: Any = None  # a pretrained part: frozen first, then fine-tuned (train.freeze_epochs)
    norm_biases: list[Any] = field(default_factory=list)  # BatchNorm offsets: their own step size
    fitted: list[Any] = field(default_factory=list)  # layers fitted to the data before training
    fitted_biases: list[Any] = field(default_factory=list)  # their trainable biases


def model_parts(net: Any) -> ModelParts:
    """The parts of ``net`` that recipes treat specially.

    - ``backbone``: the layer a transfer model marks as its pretrained backbone
      (:func:`cnnkit.models.transfer.pretrained_backbone`); None for networks trained whole.
    - ``norm_biases``: the offset (beta) of every BatchNormalization layer; the fast recipe steps
      them ``train.bias_lr_scale`` times faster than the weights.
    - ``fitted``: layers that learn from the training images before training, by ``adapt`` (the
      fast network's patch whitening); ``fitted_biases`` their trainable variables, which the
      fast recipe freezes after ``train.whiten_bias_epochs`` epochs.
    """
    from cnnkit.env import import_keras
    from cnnkit.models.transfer import pretrained_backbone

    keras = import_keras()
    norm = keras.layers.BatchNormalization
    # Only the network's own layers are fitted: a backbone's inner preprocessing (EfficientNet's
    # Normalization) keeps what it learned on ImageNet.
    fitted = [layer for layer in net.layers if callable(getattr(layer, "adapt", None))]
    return ModelParts(
        backbone=pretrained_backbone(net),
        norm_biases=[
            layer.beta for layer in _all_layers(net) if isinstance(layer, norm) and layer.center
        ],
        fitted=fitted,
        fitted_biases=[v for layer in fitted for v in layer.trainable_variables],
    )


def _all_layers(net: Any) -> list[Any]:
    """The layers of ``net`` and of the models nested in it, depth first."""
    found = []
    for layer in getattr(net, "layers", []):
        found.append(layer)
        found.extend(_all_layers(layer))
    return found


def count_flops(model: Any) -> int:
    """Forward floating-point operations per image (a multiply-add counts 2) of the convolutions
    and dense layers, which are nearly all of a CNN's work. Training costs about three times this:
    the forward pass, and the gradients for the inputs and for the weights."""
    total = 0
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None or len(kernel.shape) not in (2, 4):
            continue
        out = layer.output.shape
        if len(kernel.shape) == 4:  # (kh, kw, in, out) over an (H, W, out) output
            kh, kw, cin, cout = kernel.shape
            total += 2 * out[1] * out[2] * cout * kh * kw * cin
        else:
            total += 2 * kernel.shape[0] * kernel.shape[1]
    return int(total)
