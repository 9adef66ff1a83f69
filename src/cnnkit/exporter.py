"""Export a run's model to ONNX, a TensorFlow SavedModel or TFLite, and check that it answers as
Keras does.

    RUN/export/model.onnx | saved_model/ | model.tflite     the exported network
    RUN/export/<format>.json                                  how it was made and its parity check

The exported network is the run's network in float32: a run trained in mixed bfloat16 keeps its
weights in float32 already, and ONNX and TFLite have no bfloat16 kernels on most runtimes. It
takes raw images, float32 0-255 (N, H, W, C), like model.keras, and gives class probabilities.
Test-time augmentation is not part of the file; ``cnnkit predict --engine onnx`` applies the
run's TTA around it as it does around Keras.

Parity: on up to 1,000 test images of the run's data (random images where the data is not on
this machine, with a note), the exported model's probabilities are compared with Keras's float32
network's (tolerance ATOL) and its top-1 class with that of the run's own model.keras.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.atomic import atomic_path, read_json, remove, write_json
from cnnkit.errors import CnnkitError
from cnnkit.runs import EXPORT_FORMATS, Run, open_run

FORMATS = tuple(EXPORT_FORMATS)
ATOL = 1e-4  # largest difference allowed between exported and Keras float32 probabilities
PARITY_IMAGES = 1000


class ExportError(CnnkitError):
    """The model cannot be exported, or the export does not answer as Keras does."""


@dataclass
class Parity:
    images: int
    source: str  # "test split" or "random images"
    max_abs_difference: float  # against Keras, float32
    top1_agreement_float32: float  # share of images with the same top-1 class as Keras float32
    top1_agreement_run_model: float  # ... as the run's model.keras (bfloat16 where trained so)
    passed: bool


@dataclass
class Exported:
    format: str
    path: Path
    seconds: float
    parity: Parity
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["path"] = str(self.path)
        return values


def float32_network(model: Any) -> Any:
    """The same network with every layer computing in float32, and the same weights."""
    import keras

    spec = keras.saving.serialize_keras_object(model)

    def to_float32(value: Any) -> Any:
        if isinstance(value, dict):
            if value.get("class_name") == "DTypePolicy":
                return {**value, "config": {**value["config"], "name": "float32"}}
            return {k: to_float32(v) for k, v in value.items()}
        if isinstance(value, list):
            return [to_float32(v) for v in value]
        return value

    copy = keras.saving.deserialize_keras_object(to_float32(spec))
    copy.set_weights([np.asarray(w, dtype=np.float32) for w in model.get_weights()])
    return copy


def export(
    run: Run | str | Path, fmt: str, out: str | Path | None = None, force: bool = False,
    parity_images: int = PARITY_IMAGES,
) -> Exported:  # fmt: skip
    """Export ``run``'s model as ``fmt`` (onnx, saved_model or tflite; ``cnnkit export``) to
    ``out`` (default RUN/export/), then check that it answers as Keras does on up to
    ``parity_images`` test images. The file appears only once it is complete; an existing one
    is replaced only with ``force``. A parity failure is an ExportError (the file is kept)."""
    from cnnkit.env import backend_name, import_keras

    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if backend_name() != "tensorflow":  # the converters (tf2onnx, SavedModel, TFLite) are TF's
        raise ExportError(
            f"export runs on the TensorFlow backend, not {backend_name()}: run it with "
            f"KERAS_BACKEND=tensorflow (the run's model.keras is the same on every backend)"
        )
    import_keras()
    run = open_run(run)
    target = Path(out) if out else run.export_path(fmt)
    if target.exists() and not force:
        raise ExportError(f"{target} exists; pass --force to replace it, or --out PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    model = run.load_model()
    network = float32_network(model)
    images, source, notes = _parity_images(run, model, parity_images)
    network.predict(images[:2], verbose=0)  # Keras exports only a model that has been called
    start = time.perf_counter()
    with atomic_path(target) as tmp:
        _write(network, fmt, tmp)
        seconds = time.perf_counter() - start
        parity = check_parity(fmt, tmp, network, model, images, source)
    result = Exported(fmt, target, round(seconds, 2), parity, notes)
    write_json(target.parent / f"{fmt}.json", result.to_dict())
    if not parity.passed:
        raise ExportError(
            f"{target} does not answer as Keras does: largest probability difference "
            f"{parity.max_abs_difference:.2e} (allowed {ATOL:.0e}), top-1 agreement "
            f"{parity.top1_agreement_float32:.2%}; the file is kept for inspection"
        )
    return result


def _write_onnx(network: Any, path: Path) -> None:
    with warnings.catch_warnings():  # Keras's tf2onnx shim asks numpy for np.object
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*np.object")
        network.export(str(path), format="onnx", verbose=False)


def _write_saved_model(network: Any, path: Path) -> None:
    network.export(str(path), format="tf_saved_model", verbose=False)


def _write_tflite(network: Any, path: Path) -> None:
    import tensorflow as tf

    staging = path.with_name(path.name + ".saved_model")
    try:
        network.export(str(staging), format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(staging))
        path.write_bytes(converter.convert())
    finally:
        remove(staging)


def _write(network: Any, fmt: str, path: Path) -> None:
    try:
        _WRITERS[fmt](network, path)
    except ImportError as exc:
        raise ExportError(
            f"exporting to {fmt} needs {exc.name or 'a package'}: pip install 'cnnkit[export]'"
        ) from None


def _parity_images(run: Run, model: Any, count: int) -> tuple[np.ndarray, str, list[str]]:
    from cnnkit.data import load_dataset

    shape = tuple(int(d) for d in model.input_shape[1:])
    try:
        config = run.config()
        test = load_dataset(config.data, config.seed).test
        take = np.arange(min(count, len(test)))
        return np.asarray(test.x[take]).astype(np.float32), "test split", []
    except CnnkitError as exc:
        rng = np.random.default_rng(0)
        note = f"parity checked on random images: the run's data could not be read ({exc})"
        return (
            rng.integers(0, 256, (min(count, 256), *shape)).astype(np.float32),
            "random images",
            [note],
        )


def runtime(fmt: str, path: Path) -> Any:
    """The exported model loaded in its own runtime, as an object with Keras's ``predict``; a
    damaged or foreign file is an ExportError that says how to make it again."""
    try:
        return _runtime(fmt, path)
    except ExportError:
        raise
    except Exception as exc:  # each runtime raises its own types for a bad file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"{path} is not a loadable {fmt} model ({type(exc).__name__}: {reason}); make it "
            f"again with: cnnkit export RUN --format {fmt} --force"
        ) from None


def _runtime(fmt: str, path: Path) -> Any:
    return _RUNTIMES[fmt](path)


def _import_tensorflow() -> Any:
    """TensorFlow, imported as Keras imports it: with its start-up chatter filtered."""
    from cnnkit.env import import_keras

    import_keras()
    import tensorflow as tf

    return tf


def _saved_model(path: Path) -> Any:
    tf = _import_tensorflow()

    loaded = tf.saved_model.load(str(path))
    return _Batched(lambda x: loaded.serve(x).numpy())


class _Batched:
    def __init__(self, call: Any) -> None:
        self.call = call

    def predict(self, x: np.ndarray, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        parts = [self.call(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


class OnnxModel(_Batched):
    """An ONNX file run by onnxruntime on the CPU."""

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ExportError(
                "running an ONNX model needs onnxruntime: pip install 'cnnkit[export]'"
            ) from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        self.input_shape = (None, *shape[1:])
        super().__init__(lambda x: self.session.run(None, {self.input: x})[0])


class TFLiteModel(_Batched):
    """A TFLite file run by TensorFlow's interpreter."""

    def __init__(self, path: Path) -> None:
        tf = _import_tensorflow()
        with warnings.catch_warnings():  # "deprecated, use ai_edge_litert": still the one TF ships
            warnings.simplefilter("ignore")
            self.interpreter = tf.lite.Interpreter(model_path=str(path))
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.size = 0
        super().__init__(self._run)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self.size:
            self.interpreter.resize_tensor_input(self.input, x.shape)
            self.interpreter.allocate_tensors()
            self.size = len(x)
        self.interpreter.set_tensor(self.input, x)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output))


# How each format of runs.EXPORT_FORMATS is written and run (a new format: its file name
# there, its writer and runtime here).
_WRITERS = {"onnx": _write_onnx, "saved_model": _write_saved_model, "tflite": _write_tflite}
_RUNTIMES: dict[str, Any] = {"onnx": OnnxModel, "saved_model": _saved_model, "tflite": TFLiteModel}


def check_parity(
    fmt: str, path: Path, network: Any, model: Any, images: np.ndarray, source: str
) -> Parity:
    exported = runtime(fmt, path).predict(images, batch_size=128)
    expected = network.predict(images, batch_size=256, verbose=0)
    own = model.predict(images, batch_size=256, verbose=0)
    difference = float(np.abs(exported - expected).max())
    top = exported.argmax(axis=1)
    agree32 = float(np.mean(top == expected.argmax(axis=1)))
    return Parity(
        images=len(images),
        source=source,
        max_abs_difference=difference,
        top1_agreement_float32=agree32,
        top1_agreement_run_model=float(np.mean(top == own.argmax(axis=1))),
        passed=difference <= ATOL,
    )


def read_export(run: Run, fmt: str) -> Path:
    """The run's export in ``fmt`` (RUN/export/...), or an error that says how to make it."""
    path = run.export_path(fmt)
    if not path.exists():
        raise ExportError(
            f"{run.path} has no {fmt} export; make it with: cnnkit export {run.path} --format {fmt}"
        )
    record = path.parent / f"{fmt}.json"
    if record.is_file():
        try:
            passed = read_json(record)["parity"]["passed"]
        except (OSError, ValueError, KeyError, TypeError):
            passed = False
        if passed is not True:
            raise ExportError(
                f"{path} failed its parity check, or its record {record} is damaged; "
                f"export it again with --force"
            )
    return path
