"""The calibration as the saved model's last layer: ``softmax(scale * c + bias)`` of the centred
logits ``c = log p - mean(log p)`` of the network's probabilities (:mod:`cnnkit.calibration` fits
scale and bias and says why this is the logits divided by T for a temperature). Inside the
model, every use of the run's model.keras (predict, serve, evaluate, export to ONNX, SavedModel
and TFLite, the report) gives calibrated probabilities with no extra step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnkit.calibration import FLOOR
from cnnkit.env import import_keras

keras = import_keras()
ops = keras.ops

LAYER_NAME = "calibration"


@keras.saving.register_keras_serializable(package="cnnkit")
class Calibration(keras.layers.Layer):  # type: ignore[misc]
    """Probabilities in, calibrated probabilities out (float32): per class, ``scale`` times the
    centred logits plus ``bias``, then the softmax."""

    def __init__(self, scale: Sequence[float], bias: Sequence[float], **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # as the softmax before it, under mixed precision
        super().__init__(**kwargs)
        self.scale = [float(v) for v in scale]
        self.bias = [float(v) for v in bias]

    def call(self, probabilities: Any) -> Any:
        logp = ops.log(ops.clip(ops.cast(probabilities, "float32"), FLOOR, 1.0))
        centred = logp - ops.mean(logp, axis=-1, keepdims=True)
        scale = ops.convert_to_tensor(self.scale, dtype="float32")
        bias = ops.convert_to_tensor(self.bias, dtype="float32")
        return ops.softmax(centred * scale + bias, axis=-1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale, "bias": self.bias}


def with_calibration(net: Any, scale: Sequence[float], bias: Sequence[float]) -> Any:
    """``net`` (a network of probabilities) with the calibration as its last layer."""
    outputs = Calibration(scale, bias, name=LAYER_NAME)(net.output)
    # net.input, not net.inputs: a single input stays a tensor rather than a list of one (what
    # an exported SavedModel's signature would otherwise ask for).
    return keras.Model(net.input, outputs, name=net.name)


def calibration_of(model: Any) -> tuple[list[float], list[float]] | None:
    """The (scale, bias) a saved model applies, or None for an uncalibrated one."""
    for layer in getattr(model, "layers", []):
        if isinstance(layer, Calibration):
            return layer.scale, layer.bias
    return None
