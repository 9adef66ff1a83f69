"""The temperature as the saved model's last layer: ``softmax(log(p) / T)`` over the network's
probabilities (:mod:`cnnkit.calibration` fits T and says why the formula is the logits divided
by T). Inside the model, every use of the run's model.keras (predict, serve, export to ONNX,
SavedModel and TFLite, the report) gives calibrated probabilities with no extra step.
"""

from __future__ import annotations

from typing import Any

from cnnkit.calibration import FLOOR
from cnnkit.env import import_keras

keras = import_keras()
ops = keras.ops

LAYER_NAME = "calibration"


@keras.saving.register_keras_serializable(package="cnnkit")
class Temperature(keras.layers.Layer):  # type: ignore[misc]
    """Probabilities in, probabilities of the logits divided by ``temperature`` out (float32)."""

    def __init__(self, temperature: float = 1.0, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # as the softmax before it, under mixed precision
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, probabilities: Any) -> Any:
        logp = ops.log(ops.clip(ops.cast(probabilities, "float32"), FLOOR, 1.0))
        return ops.softmax(logp * (1.0 / self.temperature), axis=-1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature}


def with_temperature(net: Any, temperature: float) -> Any:
    """``net`` (a network of probabilities) with the temperature as its last layer."""
    outputs = Temperature(temperature, name=LAYER_NAME)(net.outputs[0])
    return keras.Model(net.inputs, outputs, name=net.name)


def temperature_of(model: Any) -> float | None:
    """The temperature a saved model applies, or None for an uncalibrated one."""
    for layer in getattr(model, "layers", []):
        if isinstance(layer, Temperature):
            return layer.temperature
    return None
