"""The fast recipe's pieces, each checked on tiny data against a hand-computed expectation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnnkit.config import AugmentConfig, load_config
from cnnkit.data.augment import EpochAugmenter
from cnnkit.env import import_keras
from conftest import cli, last_line

keras = import_keras()


def _correlated_images(n: int = 300, size: int = 16, seed: int = 0) -> np.ndarray:
    """Smooth, channel-correlated images: their 2x2 patches are far from white."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, size + 3, size + 3, 1))
    smooth = (base[:, :-3, :-3] + base[:, 1:-2, 1:-2] + base[:, 2:-1, 2:-1] + base[:, 3:, 3:]) / 4
    colour = smooth * np.array([1.0, 0.8, 0.6]) + 0.2 * rng.normal(size=(n, size, size, 3))
    return np.clip(128 + 60 * colour, 0, 255).astype(np.uint8)


def test_whitening_gives_identity_covariance_on_its_own_patches() -> None:
    from cnnkit.models.fast_cnn import PatchWhitening

    images = _correlated_images()
    layer = PatchWhitening(2)
    layer.adapt(images)
    out = np.asarray(layer(images.astype("float32")), dtype=np.float64)
    assert out.shape == (300, 15, 15, 24)
    half = out[..., :12] - np.asarray(layer.bias)[:12]  # the other 12 filters are the negatives
    np.testing.assert_allclose(out[..., 12:], -out[..., :12], atol=1e-4)
    flat = half.reshape(-1, 12)
    covariance = flat.T @ flat / len(flat)
    # eps = 5e-4 keeps the smallest directions slightly under 1; all others are 1, off-diagonals 0.
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 0.02
    assert np.all(np.diag(covariance) > 0.9) and np.all(np.diag(covariance) < 1.01)
    raw = images[:, :2, :2].reshape(300, -1).astype(np.float64)
    assert np.corrcoef(raw.T)[0, 1] > 0.5  # the input was strongly correlated


def test_whitening_kernel_is_frozen_and_saved(tmp_path: object) -> None:
    from cnnkit.models import create_model
    from cnnkit.trainer import adapt_layers

    model = create_model("fast_cnn", (32, 32, 3), 10)
    whiten = model.get_layer("whiten")
    assert [w.name for w in whiten.trainable_weights] == ["bias"]
    adapt_layers(model, _correlated_images(64, 32))
    path = f"{tmp_path}/m.keras"
    model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        np.asarray(again.get_layer("whiten").kernel), np.asarray(whiten.kernel)
    )


def test_schedule_warms_up_then_decays_linearly() -> None:
    from cnnkit.optim import WarmupLinearDecay

    schedule = WarmupLinearDecay(peak=2.0, total_steps=100, warmup=0.2, start=0.2)
    values = [float(schedule(s)) for s in (0, 10, 20, 60, 100, 120)]
    np.testing.assert_allclose(values, [0.4, 1.2, 2.0, 1.0, 0.0, 0.0], atol=1e-6)
    # airbench's triangle: 0.2 -> 1 at 23 % of the steps -> 0.07 at the end.
    schedule = WarmupLinearDecay(peak=1.0, total_steps=100, warmup=0.23, start=0.2, end=0.07)
    values = [float(schedule(s)) for s in (0, 23, 50, 100, 130)]
    np.testing.assert_allclose(values, [0.2, 1.0, 1 - 0.93 * 27 / 77, 0.07, 0.07], atol=1e-6)


def test_fast_cnn_starts_as_the_recipe_starts() -> None:
    """PyTorch's initialisation scale, identity filters, BatchNorm keeping 0.6 of its average."""
    from cnnkit.models.fast_cnn import fast_cnn

    keras.utils.set_random_seed(0)
    model = fast_cnn((32, 32, 3), 10)
    kernel = np.asarray(model.get_layer("block2_conv1").kernel)  # (3, 3, 64, 256)
    centre = kernel[1, 1, :, :64]
    np.testing.assert_array_equal(centre, np.eye(64))
    np.testing.assert_array_equal(kernel[0, :, :, :64], 0.0)
    drawn = kernel[..., 64:]
    bound = 1 / np.sqrt(9 * 64)
    assert np.abs(drawn).max() <= bound and np.abs(drawn).max() > 0.95 * bound
    # A 3x3 "same" convolution whose filters are all identities passes its input through.
    square = model.get_layer("block1_conv2")
    x = np.random.default_rng(0).normal(size=(2, 15, 15, 64)).astype("float32")
    np.testing.assert_allclose(np.asarray(square(x)), x, atol=0.05)  # bf16 or fp32 policy
    assert np.abs(np.asarray(model.get_layer("head").kernel)).max() <= 1 / np.sqrt(256)
    norm = model.get_layer("block3_norm2")
    assert norm.momentum == pytest.approx(0.6) and not norm.scale
    mean = np.asarray(norm.moving_mean).copy()
    batch = np.random.default_rng(1).normal(5.0, 1.0, size=(64, 3, 3, 256)).astype("float32")
    norm(batch, training=True)
    np.testing.assert_allclose(
        np.asarray(norm.moving_mean), 0.6 * mean + 0.4 * batch.mean(axis=(0, 1, 2)), rtol=1e-3
    )


def _torch_style_reference(w0, grads, lr, mult, decay, peak, momentum, lookahead, total):  # type: ignore[no-untyped-def]
    """PyTorch SGD(nesterov, weight_decay=decay/(peak*mult)) plus airbench's lookahead, in NumPy."""
    w, buf, slow = w0.copy(), np.zeros_like(w0), w0.copy()
    for step, g in enumerate(grads, start=1):
        g = g + decay / (peak * mult) * w
        buf = momentum * buf + g
        w = w - lr * mult * (g + momentum * buf)
        if step % lookahead == 0 or step == total:
            keep = 1.0 if step == total else 0.95**5 * (step / total) ** 3
            slow = slow + (1 - keep) * (w - slow)
            w = slow.copy()
    return w


@pytest.mark.parametrize("mult", [1.0, 64.0])
def test_nesterov_sgd_matches_the_pytorch_formula_with_lookahead(mult: float) -> None:
    from cnnkit.optim import NesterovSGD

    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(5,)).astype("float32")
    grads = [rng.normal(size=(5,)).astype("float32") for _ in range(7)]
    variable = keras.Variable(w0, name="beta" if mult != 1.0 else "kernel")
    optimizer = NesterovSGD(
        0.01, peak=0.01, momentum=0.85, decay=0.003, multipliers={"beta": 64.0},
        lookahead_every=3, total_steps=7,
    )  # fmt: skip
    for g in grads:
        optimizer.apply([keras.ops.convert_to_tensor(g)], [variable])
    expected = _torch_style_reference(w0, grads, 0.01, mult, 0.003, 0.01, 0.85, 3, 7)
    np.testing.assert_allclose(np.asarray(variable), expected, rtol=1e-5, atol=1e-6)


def test_frozen_variables_stop_moving_after_their_step() -> None:
    from cnnkit.optim import NesterovSGD

    frozen = keras.Variable(np.ones(3, "float32"), name="bias")
    optimizer = NesterovSGD(0.1, peak=0.1, momentum=0.5, freeze_after={"bias": 2})
    values = []
    for _ in range(4):
        optimizer.apply([keras.ops.ones((3,))], [frozen])
        values.append(float(np.asarray(frozen)[0]))
    assert values[0] < 1.0 and values[1] < values[0]  # steps 0 and 1 move it
    assert values[2] == values[1] == values[3]  # from step 2 on it stays


def test_epoch_augmenter_translates_and_alternates_flips() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
    cfg = AugmentConfig(rotation=0, shift=0, translate=2, alternate_flip=True)
    augment = EpochAugmenter(images, cfg, seed=3)
    first, again = augment(0), augment(0)
    assert np.array_equal(first, again)  # a pure function of (seed, epoch)
    assert not np.array_equal(first, augment(2))  # new crops each epoch
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    for i in range(40):  # every image is an 8x8 window of its padded self, mirrored or not
        windows = [
            padded[i, y : y + 8, x : x + 8][:, ::flip]
            for y in range(5)
            for x in range(5)
            for flip in (1, -1)
        ]
        assert any(np.array_equal(first[i], w) for w in windows)
    # Flips only: epoch 1 flips exactly the images that epoch 0 did not.
    flips = EpochAugmenter(images, AugmentConfig(rotation=0, shift=0, alternate_flip=True), seed=3)
    even, odd = flips(0), flips(1)
    flipped_even = np.array([np.array_equal(even[i], images[i, :, ::-1]) for i in range(40)])
    flipped_odd = np.array([np.array_equal(odd[i], images[i, :, ::-1]) for i in range(40)])
    assert np.array_equal(flipped_odd, ~flipped_even) and 5 < flipped_even.sum() < 35
    assert not EpochAugmenter(images, AugmentConfig(), seed=0).active  # the tutorial's is in-graph


def test_tta_levels_average_the_logits() -> None:
    from cnnkit.metrics import predict_probabilities

    dense = keras.layers.Dense(3)  # on pixels / 255: logits of a few units, a soft softmax
    scaled = [keras.Input((6, 6, 1)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten()]
    model = keras.Sequential([*scaled, dense, keras.layers.Softmax()])
    logits_of = keras.Sequential([*scaled, dense])
    x = np.random.default_rng(0).integers(0, 256, size=(4, 6, 6, 1)).astype("uint8")

    def logits(images: np.ndarray) -> np.ndarray:
        return np.asarray(logits_of.predict(images, verbose=0), dtype=np.float64)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    plain = model.predict(x, verbose=0)
    np.testing.assert_allclose(predict_probabilities(model, x, 2, tta=0), plain, rtol=1e-6)
    mirror = 0.5 * (logits(x) + logits(x[:, :, ::-1]))
    level1 = predict_probabilities(model, x, 2, tta=1)
    np.testing.assert_allclose(level1, softmax(mirror), rtol=1e-4, atol=1e-6)
    # Not the average of the probabilities (which was the rule before).
    averaged = 0.5 * (plain + model.predict(x[:, :, ::-1], verbose=0))
    assert not np.allclose(level1, averaged, rtol=1e-3)
    symmetric = np.concatenate([x[:, :, :3], x[:, :, :3][:, :, ::-1]], axis=2)  # its own mirror
    np.testing.assert_allclose(
        predict_probabilities(model, symmetric, 2, tta=1),
        model.predict(symmetric, verbose=0),
        rtol=1e-4,
    )
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    up_left, down_right = padded[:, 0:6, 0:6], padded[:, 2:8, 2:8]
    shifts = 0.5 * (logits(up_left) + logits(up_left[:, :, ::-1]))
    shifts += 0.5 * (logits(down_right) + logits(down_right[:, :, ::-1]))
    level2 = predict_probabilities(model, x, 2, tta=2)
    np.testing.assert_allclose(level2, softmax(0.5 * mirror + 0.25 * shifts), rtol=1e-4, atol=1e-6)


def test_budget_sets_the_epochs_from_the_measured_speed(monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnkit import budget, trainer
    from cnnkit.config import DataConfig
    from cnnkit.data import load_dataset
    from cnnkit.errors import ConfigError

    data = load_dataset(DataConfig(name="synthetic", val_split=0.0), seed=0)  # 800 images
    monkeypatch.setattr(trainer, "measure_speed", lambda *args, **kwargs: 400.0)
    config = load_config(
        "fast", overrides=["data.name=synthetic", "train.budget=30", "model.params.widths=[8,8,8]"]
    )
    resolved, record = budget.fit_budget(config, data, "float32")
    # 30 s / (800 images / (400 images/s * 0.9) + 1.5 s an epoch): 8 passes at most.
    assert 1 <= resolved.train.epochs <= 8 and record["epochs"] == resolved.train.epochs
    assert record["images_per_second"] == 400.0 and "widths" not in record  # the user's widths
    assert resolved.model.params == {"widths": [8, 8, 8]}
    with pytest.raises(ConfigError, match="too short"):
        budget.fit_budget(config.replace(**{"train.budget": 1.0}), data, "float32")


def test_budget_below_one_epoch_trains_one_epoch_on_a_stratified_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cnnkit import budget, trainer
    from cnnkit.data import load_dataset

    monkeypatch.setattr(trainer, "measure_speed", lambda *args, **kwargs: 50.0)
    config = load_config(
        "fast", overrides=["data.name=synthetic", "train.budget=10", "train.batch_size=64"]
    )
    data = load_dataset(config.data, config.seed)  # 800 images, no validation split
    resolved, record = budget.fit_budget(config, data, "float32")
    # (10 s - calibration - 1.5 s) * 50 images/s * 0.9: at most 382 images, one epoch over
    # them, on the narrowest member of the family.
    assert resolved.train.epochs == 1 and 128 <= record["train_images"] <= 382
    assert resolved.model.params["widths"] == list(budget.FAMILY[0])
    sample = load_dataset(resolved.data, resolved.seed, resolved.train.calibrate)
    # Less the calibration split held out of the sample (the fast preset has no validation).
    assert len(sample.train) == record["train_images"]
    assert len(sample.train) + len(sample.held_out) == resolved.data.train_subset
    assert np.bincount(sample.train.y).min() >= np.bincount(sample.train.y).max() - 1  # stratified


def _measured_by_width(monkeypatch: pytest.MonkeyPatch, speeds: dict[int, float]) -> list[Any]:
    """Make the budget's probe answer ``speeds[first width]`` and record what it measured."""
    from cnnkit import budget

    probes: list[Any] = []

    def measure(config: Any, data: Any, params: dict[str, Any]) -> float:
        probes.append(tuple(params["widths"]))
        return speeds[params["widths"][0]]

    monkeypatch.setattr(budget, "_measure", measure)
    return probes


def test_budget_chooses_the_widest_network_that_makes_enough_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The family member that makes MIN_PASSES passes in the time left, at most two probes,
    and the width recorded in the config (so that a resume builds the same network)."""
    from cnnkit import budget
    from cnnkit.data import load_dataset

    monkeypatch.setattr(budget, "MIN_PASSES", 2.0)  # the numbers below: two passes
    config = load_config("fast", overrides=["data.name=synthetic", "train.budget=100"])
    data = load_dataset(config.data, config.seed)  # 800 images
    # 100 s at 10 images/s is ~1 pass for the narrowest: it trains, measured alone.
    probes = _measured_by_width(monkeypatch, {16: 10.0, 32: 5.0, 48: 2.5, 64: 1.0})
    resolved, record = budget.fit_budget(config, data, "float32")
    assert probes == [budget.FAMILY[0]] and record["widths"] == list(budget.FAMILY[0])
    # 300 s: the full network is estimated at 3.4 passes, measured at 1.7; the third then
    # estimated from it at 2.4 passes and measured at 3.3: it trains, at its measured speed.
    probes = _measured_by_width(monkeypatch, {16: 100.0, 32: 40.0, 48: 10.0, 64: 5.0})
    longer = config.replace(**{"train.budget": 300.0})
    resolved, record = budget.fit_budget(longer, data, "float32")
    assert probes == [budget.FAMILY[0], budget.FAMILY[3], budget.FAMILY[2]]
    assert resolved.model.params["widths"] == record["widths"] == list(budget.FAMILY[2])
    assert record["images_per_second"] == 10.0 and record["epochs"] == resolved.train.epochs >= 3
    assert set(record["measured"]) == {"16x64x64", "64x256x256", "48x192x192"}
    # 100 s: the second member is estimated at 3.8 passes (after its probe's seconds), measured
    # at 0.6: back to the narrowest.
    probes = _measured_by_width(monkeypatch, {16: 100.0, 32: 5.0, 48: 10.0, 64: 5.0})
    resolved, record = budget.fit_budget(config, data, "float32")
    assert record["widths"] == list(budget.FAMILY[0]) and record["images_per_second"] == 100.0
    # Much faster: the full network, with its speed estimated from the nearest measured member.
    probes = _measured_by_width(monkeypatch, {16: 2000.0, 32: 1000.0, 48: 800.0, 64: 600.0})
    resolved, record = budget.fit_budget(config, data, "float32")
    assert record["widths"] == list(budget.FAMILY[-1]) == [64, 256, 256] and len(probes) == 2
    # Another network, or widths of the user's own: never changed.
    seed = load_config("seed", overrides=["data.name=synthetic", "train.budget=100"])
    assert not budget.chooses_width(seed)
    assert not budget.chooses_width(config.replace(**{"model.params.widths": [8, 8, 8]}))


def test_budget_rounds_passes_to_epochs_and_halves_the_batch_towards_enough_steps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cnnkit import budget
    from cnnkit.data import load_dataset

    config = load_config(  # every image trains (no calibration split): the numbers below
        "fast", overrides=["data.name=synthetic", "train.budget=300", "train.calibrate=false"]
    )
    data = load_dataset(config.data, config.seed)  # 800 images
    _measured_by_width(monkeypatch, {16: 8.0, 32: 3.0, 48: 1.0, 64: 1.0})
    monkeypatch.setattr(budget, "TARGET_STEPS", 8)  # scale the rule to the small data set
    resolved, record = budget.fit_budget(config, data, "float32")
    # 300 s / (800 images / (8 images/s * 0.9) + 1.5 s an epoch): 2.66 passes, rounded up to 3 epochs on the
    # ~709 images that 3 epochs fit.
    assert record["widths"] == list(budget.FAMILY[0]) and 2.6 < record["passes"] <= 2.69
    assert resolved.train.epochs == 3 and 690 < record["train_images"] <= 709
    assert resolved.data.train_subset == record["train_images"]
    # 3 epochs x ~760 images: 3 steps of 1024, 6 of 512, 9 of 256 (the smallest it goes).
    assert resolved.train.batch_size == record["batch_size"] == 256
    few = config.replace(**{"train.batch_size": 128})
    assert budget.fit_budget(few, data, "float32")[0].train.batch_size == 128  # never larger


@pytest.mark.slow
def test_a_budget_run_builds_and_records_the_width_it_chose(tmp_path: Path) -> None:
    """End to end on the 800 generated images: the widths the budget chose are in the run's
    config (what a resume rebuilds from), in run.json, and in the saved network."""
    from cnnkit.budget import FAMILY
    from cnnkit.runs import open_run

    run = open_run(last_line(cli("train", "--runs-dir", str(tmp_path), "data.name=synthetic",
                                 "train.budget=30", "train.tta=0")))  # fmt: skip
    chosen = run.meta()["budget"]
    assert tuple(chosen["widths"]) in FAMILY
    assert run.config().model.params == {"widths": chosen["widths"]}
    assert run.config().train.epochs == chosen["epochs"] == run.meta()["epochs"]
    net = run.load_model()
    assert [net.get_layer(f"block{i}_conv2").filters for i in (1, 2, 3)] == chosen["widths"]


def test_fast_is_the_default_and_seed_stays_the_tutorial() -> None:
    default, fast, seed = load_config(), load_config("fast"), load_config("seed")
    assert default == fast and fast.model.name == "fast_cnn" and fast.train.tta == 2
    assert seed.model.name == "seed_cnn" and seed.train.optimizer == "adam"
    assert seed.train.learning_rate == 1e-4 and seed.augment.translate == 0


def test_few_steps_warning_suggests_a_smaller_batch() -> None:
    from cnnkit.budget import few_steps_warning

    assert few_steps_warning(50_000, 1024, 10) is None  # 490 steps
    # Two epochs of CIFAR-10 at 1024 (98 steps): half the batch, never a larger one.
    assert "train.batch_size=512)" in (few_steps_warning(50_000, 1024, 2) or "")
    # A small folder: 2,000 images, 10 epochs at 1024 make 20 steps; 128 makes 160.
    assert "train.batch_size=128)" in (few_steps_warning(2_000, 1024, 10) or "")
    assert "batch_size" not in (few_steps_warning(100, 16, 1) or "x")  # only more epochs


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
