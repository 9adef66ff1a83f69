"""cnnkit.budget: a time budget turned into epochs, a network width and a batch size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnnkit.config import load_config
from conftest import cli, last_line


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


def test_a_small_training_set_gets_a_batch_that_makes_two_steps_an_epoch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folder of a few hundred images: the passes that fit, rounded up, make each epoch a
    sample a little smaller than the set, which the preset's batch (1024, halved to 256) would
    cross in one step; the batch halves on until an epoch is two of them, rather than the plan
    calling any budget too short (a new user's folder of 400 images, README's tour)."""
    from cnnkit import budget
    from cnnkit.data import load_dataset

    config = load_config("fast", overrides=["data.name=synthetic", "data.train_subset=400",
                                            "train.budget=60"])  # fmt: skip
    data = load_dataset(config.data, config.seed, config.train.calibrate)  # 380 train
    _measured_by_width(monkeypatch, {16: 700.0, 32: 700.0, 48: 700.0, 64: 700.0})
    resolved, record = budget.fit_budget(config, data, "float32")
    images = record.get("train_images", len(data.train))
    assert 2 * record["batch_size"] <= images and record["batch_size"] >= budget.MIN_BATCH
    assert resolved.train.batch_size == record["batch_size"] and record["epochs"] > 1


@pytest.mark.slow
def test_a_budget_run_builds_and_records_the_width_it_chose(tmp_path: Path) -> None:
    """End to end on the 800 generated images: the widths the budget chose are in the run's
    config (what a resume rebuilds from), in run.json, and in the saved network."""
    from cnnkit.budget import FAMILY
    from cnnkit.runs import open_run

    run = open_run(last_line(cli("train", "--runs-dir", str(tmp_path), "data.name=synthetic",
                                 "train.budget=15", "train.tta=0")))  # fmt: skip
    chosen = run.meta()["budget"]
    assert tuple(chosen["widths"]) in FAMILY
    assert run.config().model.params == {"widths": chosen["widths"]}
    assert run.config().train.epochs == chosen["epochs"] == run.meta()["epochs"]
    net = run.load_model()
    assert [net.get_layer(f"block{i}_conv2").filters for i in (1, 2, 3)] == chosen["widths"]


def test_few_steps_warning_suggests_a_smaller_batch() -> None:
    from cnnkit.budget import few_steps_warning

    assert few_steps_warning(50_000, 1024, 10) is None  # 490 steps
    # Two epochs of CIFAR-10 at 1024 (98 steps): half the batch, never a larger one.
    assert "train.batch_size=512)" in (few_steps_warning(50_000, 1024, 2) or "")
    # A small folder: 2,000 images, 10 epochs at 1024 make 20 steps; 128 makes 160.
    assert "train.batch_size=128)" in (few_steps_warning(2_000, 1024, 10) or "")
    assert "batch_size" not in (few_steps_warning(100, 16, 1) or "x")  # only more epochs
