"""Transfer learning: backbones with their preprocessing inside, two-phase training, weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnkit.config import load_config
from cnnkit.errors import ConfigError, DataError
from cnnkit.models import create_model


@pytest.fixture(scope="module")
def mobilenet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local weights file standing in for ImageNet's (tests never download)."""
    import keras

    keras.utils.set_random_seed(7)
    net = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2_no_top.weights.h5"
    net.save_weights(path)
    return path


@pytest.mark.parametrize(
    ("name", "shape"), [("resnet50", (32, 32, 3)), ("efficientnet_b0", (28, 28, 1))]
)
def test_large_backbones_build_and_predict(name: str, shape: tuple[int, int, int]) -> None:
    model = create_model(name, shape, 7, weights="none")
    x = np.random.default_rng(0).integers(0, 256, (2, *shape), dtype=np.uint8)
    out = model.predict(x, verbose=0)
    assert out.shape == (2, 7)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert model.get_layer("features").input_shape[1:] == (32, 32, 3)  # grey and small: adapted


def test_preprocessing_is_the_backbones_own() -> None:
    import keras

    model = create_model("resnet50", (32, 32, 3), 3, weights="none")
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    ours = model.get_layer("preprocess")(x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours),
        keras.applications.resnet50.preprocess_input(x.copy()),
        rtol=1e-5,
        atol=1e-4,
    )
    mobile = create_model("mobilenet_v2", (32, 32, 3), 3, weights="none")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(mobile.get_layer("preprocess")(x)),
        keras.applications.mobilenet_v2.preprocess_input(x.copy()),
        rtol=1e-5,
        atol=1e-5,
    )


def test_weights_from_a_local_file(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(1)
    source = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg"
    )
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    model = create_model("mobilenet_v2", (32, 32, 3), 4, weights=str(path))
    for a, b in zip(model.get_layer("backbone").get_weights(), source.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="no such file"):
        create_model("mobilenet_v2", (32, 32, 3), 4, weights=str(tmp_path / "missing.h5"))
    with pytest.raises(DataError, match="downloads are disabled"):  # offline: a clear error
        create_model("mobilenet_v2", (32, 32, 3), 4, weights="imagenet")
    with pytest.raises(ConfigError, match="has no pretrained weights"):
        create_model("seed_cnn", (32, 32, 3), 4, weights="imagenet")


# One configuration for both tests below: a MobileNetV2 backbone from a local weights file,
# one epoch of the head alone, then one fine-tuning the top 10 layers (no report page: neither
# test reads it, and Grad-CAM through MobileNetV2 costs seconds).
TRANSFER = [
    "data.name=synthetic", "data.image_size=32", "data.val_split=0", "data.train_subset=64",
    "train.freeze_epochs=1", "train.finetune_layers=10", "train.batch_size=32", "train.precision=fp32",
    "report.enabled=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def two_phases(
    tmp_path_factory: pytest.TempPathFactory, mobilenet_weights: Path
) -> tuple[Path, list[dict[str, list[np.ndarray]]]]:
    """A two-epoch transfer run, with the weights of the backbone's layers and of the head
    before training and after each epoch."""
    import keras

    from cnnkit.workflow import train

    snapshots: list[dict[str, list[np.ndarray]]] = []

    def layers(net: object) -> list[object]:
        backbone = net.get_layer("backbone")  # type: ignore[attr-defined]
        return [*backbone.layers, net.get_layer("probabilities")]  # type: ignore[attr-defined]

    class Snapshot(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_begin(self, logs: object = None) -> None:
            if not snapshots:  # the weights before any training
                self.on_epoch_end(-1)

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            net = self.model.get_layer("mobilenet_v2")
            snapshots.append(
                {layer.name: [np.array(w) for w in layer.get_weights()] for layer in layers(net)}
            )

    config = load_config(
        "transfer", overrides=[*TRANSFER, f"model.weights={mobilenet_weights}", "train.epochs=2"]
    )
    run = train(config, tmp_path_factory.mktemp("transfer"), verbose=0, callbacks=[Snapshot()])
    return run.path, snapshots


@pytest.mark.slow
def test_two_phase_training_freezes_then_fine_tunes_the_top(
    two_phases: tuple[Path, list[dict[str, list[np.ndarray]]]],
) -> None:
    import keras

    from cnnkit.runs import Run

    path, snapshots = two_phases
    start, first, second = snapshots

    def moved(a: dict[str, list[np.ndarray]], b: dict[str, list[np.ndarray]], name: str) -> bool:
        return any(not np.array_equal(x, y) for x, y in zip(a[name], b[name], strict=True))

    # Phase one: the head learns, the backbone (frozen) does not move at all.
    assert moved(start, first, "probabilities")
    assert not any(moved(start, first, name) for name in start if name != "probabilities")
    model = Run(path).load_model()
    backbone = model.get_layer("backbone")
    layers = backbone.layers
    top = {layer.name for layer in layers[-10:]}
    changed = [
        name for name in first
        if name != "probabilities"
        and any(not np.array_equal(a, b) for a, b in zip(first[name], second[name], strict=True))
    ]  # fmt: skip
    assert changed, "fine-tuning changed nothing"
    assert set(changed) <= top  # only the top layers moved in phase two
    assert all(
        not isinstance(backbone.get_layer(n), keras.layers.BatchNormalization) for n in changed
    )
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(first["probabilities"], second["probabilities"], strict=True)
    )
    # What was saved is what was trained, and it predicts.
    saved = {layer.name: layer.get_weights() for layer in layers}
    for name in changed:
        for a, b in zip(saved[name], second[name], strict=True):
            np.testing.assert_array_equal(a, b)
    assert model.predict(np.zeros((1, 32, 32, 3), np.uint8), verbose=0).shape == (1, 4)


@pytest.mark.slow
def test_resume_across_the_phase_boundary(
    tmp_path: Path, mobilenet_weights: Path, two_phases: tuple[Path, object]
) -> None:
    from cnnkit.runs import Run
    from cnnkit.workflow import resume, train

    whole = Run(two_phases[0])  # both epochs in one go
    overrides = [*TRANSFER, f"model.weights={mobilenet_weights}", "train.epochs=1"]
    half = train(load_config("transfer", overrides=overrides), tmp_path, verbose=0)
    resume(half, ["train.epochs=2"], force=True, verbose=0)  # saved in phase one, goes on in two
    a, b = whole.load_model(), half.load_model()
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_class_weights_are_balanced() -> None:
    from cnnkit.trainer import class_weights

    y = np.array([0] * 6 + [1] * 2 + [3] * 4)  # class 2 has no images
    weights = class_weights(y, 4)
    assert weights == pytest.approx({0: 12 / (3 * 6), 1: 12 / (3 * 2), 2: 1.0, 3: 12 / (3 * 4)})


def test_weights_that_cannot_load_are_refused_before_a_run_exists(tmp_path: Path) -> None:
    from cnnkit.workflow import train
    from conftest import cli

    runs = tmp_path / "runs"
    done = cli("train", "--runs-dir", str(runs), "data.name=digits", "model.name=mobilenet_v2")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr  # offline: imagenet
    missing = load_config(overrides=[
        "data.name=digits", "model.name=resnet50", f"model.weights={tmp_path / 'missing.h5'}",
    ])  # fmt: skip
    with pytest.raises(ConfigError, match="no such file"):
        train(missing, runs)
    assert not runs.exists() or not any(runs.iterdir())


def test_random_weights_train_the_whole_network_from_scratch(mobilenet_weights: Path) -> None:
    """weights=none: no frozen part, and BatchNorm learns its statistics (in inference mode,
    untrained statistics would squash every image to the same features). A pretrained backbone's
    statistics never move, in either phase."""
    import keras

    from cnnkit.trainer import compile_phase, training_phase

    cfg = load_config("transfer", overrides=["train.finetune_layers=200"]).train
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    cases = [("none", "features", "all", True), (str(mobilenet_weights), "backbone", "frozen", False),
             (str(mobilenet_weights), "backbone", "finetune", False)]  # fmt: skip
    for weights, part, phase, moves in cases:
        model = create_model("mobilenet_v2", (32, 32, 3), 3, weights=weights)
        assert training_phase(model, cfg, 0 if phase != "finetune" else 3) == phase
        compile_phase(model, model, cfg, 1, phase)
        norm = next(
            layer for layer in model.get_layer(part).layers
            if isinstance(layer, keras.layers.BatchNormalization)
        )  # fmt: skip
        before = np.array(norm.moving_mean)
        model(x, training=True)  # what a training step does to BatchNorm
        assert moves != np.array_equal(before, np.array(norm.moving_mean)), (weights, phase)
