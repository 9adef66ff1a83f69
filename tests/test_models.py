from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnkit.errors import ConfigError
from cnnkit.models import create_model, list_models, model_hparams

# The big pretrained backbones get their own lighter test below (building ResNet50 takes seconds).
LARGE = ("resnet50", "efficientnet_b0")


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        (name, shape)
        for name in list_models()
        if name not in LARGE
        for shape in [(32, 32, 3), (16, 16, 1)]
        # One case of a pretrained backbone (grey and small: it adapts both); it takes 25 s.
        if name != "mobilenet_v2" or shape == (16, 16, 1)
    ],
)
def test_model_builds_trains_saves_and_reloads_in_a_fresh_process(
    name: str, shape: tuple[int, int, int], tmp_path: Path
) -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = create_model(name, shape, 5, weights="none")  # tests never download
    assert model.input_shape[1:] == shape and model.output_shape == (None, 5)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(8, *shape), dtype=np.uint8)  # raw pixels, as every model takes
    y = np.eye(5, dtype=np.float32)[rng.integers(0, 5, size=8)]
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, rtol=1e-5)

    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np\n"
        "from cnnkit.runs import load_model\n"
        "m = load_model(sys.argv[1])\n"
        "np.save(sys.argv[3], m.predict(np.load(sys.argv[2]), verbose=0))\n"
    )
    out = tmp_path / "p.npy"
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "x.npy"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)


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
