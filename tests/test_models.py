from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from cnnkit.config import load_config
from cnnkit.env import import_keras
from cnnkit.errors import ConfigError
from cnnkit.models import create_model, list_models, model_hparams

keras = import_keras()

# The big pretrained backbones get their own lighter test (test_transfer.py: building ResNet50
# takes seconds); one case of a pretrained backbone here (grey and small: it adapts both), which
# is not trained here: test_transfer.py trains it in both phases (its training step alone would
# cost 24 s to trace here).
LARGE = ("resnet50", "efficientnet_b0")
TRAINED_ELSEWHERE = ("mobilenet_v2",)
CASES = [
    (name, shape)
    for name in list_models()
    if name not in LARGE
    for shape in [(32, 32, 3), (16, 16, 1)]
    if name != "mobilenet_v2" or shape == (16, 16, 1)
]


@dataclass
class Trained:
    shape: tuple[int, int, int]
    loss: float
    moved: bool  # a training step changed the weights
    expected: np.ndarray  # its predictions after that step
    path: Path  # where it was saved
    images: Path  # the images it predicted (.npy)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Trained]:
    """Every registered model (one case each shape): built, one training step, saved."""
    import keras

    folder = tmp_path_factory.mktemp("models")
    out = {}
    for name, shape in CASES:
        keras.utils.set_random_seed(0)
        model = create_model(name, shape, 5, weights="none")  # tests never download
        assert model.input_shape[1:] == shape and model.output_shape == (None, 5)
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        rng = np.random.default_rng(0)
        # Raw pixels, as every model takes.
        x = rng.integers(0, 256, size=(8, *shape), dtype=np.uint8)
        y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, size=8)]
        loss, moved = float("nan"), False
        if name not in TRAINED_ELSEWHERE:
            before = [w.copy() for w in model.get_weights()]
            loss = float(model.train_on_batch(x, y))
            moved = any(
                not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True)
            )
        key = f"{name}-{'x'.join(map(str, shape))}"
        model.save(folder / f"{key}.keras")
        np.save(folder / f"{key}.npy", x)
        out[key] = Trained(shape, loss, moved, model.predict(x, verbose=0), folder / f"{key}.keras",
                           folder / f"{key}.npy")  # fmt: skip
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("name", "shape"), CASES)
def test_model_builds_trains_and_saves(
    trained: dict[str, Trained], name: str, shape: tuple[int, int, int]
) -> None:
    case = trained[f"{name}-{'x'.join(map(str, shape))}"]
    if name not in TRAINED_ELSEWHERE:
        assert np.isfinite(case.loss) and case.moved
    np.testing.assert_allclose(case.expected.sum(axis=1), 1.0, rtol=1e-5)
    assert case.path.stat().st_size > 0


@pytest.mark.slow
def test_saved_models_reload_in_a_fresh_process(
    trained: dict[str, Trained], tmp_path: Path
) -> None:
    """Each saved model loads in a new process (only what Keras registered there: cnnkit's
    serializable layers must register themselves) and predicts what it predicted here."""
    script = (
        "import sys, numpy as np\n"
        "from cnnkit.runs import load_model\n"
        "for model, images, out in zip(*[iter(sys.argv[1:])] * 3):\n"
        "    np.save(out, load_model(model).predict(np.load(images), verbose=0))\n"
    )
    args = [str(v) for key, case in trained.items()
            for v in (case.path, case.images, tmp_path / f"{key}.npy")]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for key, case in trained.items():
        np.testing.assert_allclose(np.load(tmp_path / f"{key}.npy"), case.expected, rtol=1e-5,
                                   atol=1e-6, err_msg=key)  # fmt: skip


def test_seed_cnn_is_the_tutorial_network() -> None:
    model = create_model("seed_cnn", (32, 32, 3), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer",
        "Rescaling",
        *(["Conv2D", "Conv2D", "MaxPooling2D", "Dropout"] * 3),
        "Flatten",
        "Dense",
        "Dropout",
        "Dense",
    ]
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)
    assert model.layers[-3].units == 512 and model.layers[-2].rate == 0.5
    assert model.count_params() == 1_341_226  # conv 287,008 + dense 1,048,576+512 + head 5,130


def test_unknown_model_and_parameter() -> None:
    with pytest.raises(ConfigError, match="did you mean 'seed_cnn'"):
        create_model("seed_cn", (32, 32, 3), 10)
    with pytest.raises(ConfigError, match="did you mean 'dense'"):
        create_model("seed_cnn", (32, 32, 3), 10, dens=4)
    assert model_hparams("seed_cnn")["dense"] == 512


def test_models_declare_what_the_recipe_treats_specially() -> None:
    """The optimizer asks the model for its BatchNorm offsets and fitted biases (by type, not
    by name), and the trainer asks it for a pretrained backbone."""
    from cnnkit.models import create_model, model_parts
    from cnnkit.optim import create_optimizer

    net = create_model("fast_cnn", (32, 32, 3), 10)
    parts = model_parts(net)
    norms = [f"block{i}_norm{j}/beta" for i in (1, 2, 3) for j in (1, 2)]
    assert [v.path for v in parts.norm_biases] == norms
    assert [layer.name for layer in parts.fitted] == ["whiten"]
    assert [v.path for v in parts.fitted_biases] == ["whiten/bias"] and parts.backbone is None
    optimizer = create_optimizer(load_config("fast").train, 10, net)
    assert optimizer.multipliers == dict.fromkeys(norms, 64.0)
    assert optimizer.freeze_after == {"whiten/bias": 30}  # 3 epochs of 10 steps
    # A BatchNorm layer is found whatever its name; a variable called "beta" elsewhere is not one.
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="beta")(inputs)
    x = keras.layers.BatchNormalization(name="anything")(x)
    odd = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x)))
    assert [v.path for v in model_parts(odd).norm_biases] == ["anything/beta"]
    seed = model_parts(create_model("seed_cnn", (32, 32, 3), 10))
    assert (seed.norm_biases, seed.fitted, seed.backbone) == ([], [], None)
