"""Hostile input, class 2: no silent wrong answers.

A model that is not the run's, a value outside what a key can mean, a key given twice, a link
that would give an image another class's label: each is refused (or left out and listed),
never answered as if it were right.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import typing
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnkit.config import Config, load_config
from cnnkit.errors import ConfigError
from conftest import cli


@pytest.fixture
def run_with(untrained_run: Path, tmp_path: Path) -> typing.Callable[..., Path]:
    """A copy of the digits run whose model.keras is replaced by a seed_cnn of another shape."""

    def make(input_shape: tuple[int, int, int], classes: int) -> Path:
        from cnnkit.models import create_model

        copy = tmp_path / "run"
        shutil.copytree(untrained_run, copy, ignore=shutil.ignore_patterns("checkpoints", "export"))
        net = create_model("seed_cnn", input_shape, classes, filters=[4], dense=8)
        net.save(copy / "model.keras")
        return copy

    return make


@pytest.mark.parametrize(
    ("shape", "classes", "message"),
    [((8, 8, 1), 5, "answers with 5 outputs, but run"), ((8, 8, 1), 12, "12 outputs"),
     ((16, 16, 1), 10, "takes images of shape (16, 16, 1)")],
)  # fmt: skip
def test_a_model_that_is_not_the_runs_is_refused_by_every_verb(
    run_with: typing.Callable[..., Path], tmp_path: Path, shape: tuple, classes: int, message: str
) -> None:
    run = run_with(shape, classes)
    image = tmp_path / "digit.png"
    Image.new("L", (8, 8), 200).save(image)
    for args in (("predict", str(run), str(image)), ("evaluate", str(run)),
                 ("serve", str(run), "--port", "1")):  # fmt: skip
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, args
        assert result.stdout == "", args


# Every number in the schema has a range: the cases and the ends of a few ranges.
@pytest.mark.parametrize(
    "item",
    ["train.label_smoothing=5", "train.momentum=-3", "train.tta=9", "train.lookahead=-2",
     "train.checkpoint_steps=-1", "train.learning_rate=inf", "train.learning_rate=nan",
     "train.batch_size=99999999999999999999", "train.epochs=inf", "seed=-1", "seed=4294967296",
     "data.image_size=4", "data.cache_mb=-1", "augment.rotation=181", "train.budget=-5",
     "train.weight_decay=-0.1", "train.finetune_lr_scale=0", "name=../elsewhere"],
)  # fmt: skip
def test_out_of_range_values_are_refused_before_a_run_exists(item: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config key '[a-z_.]+' (must|needs)"):
        load_config(overrides=[item])
    runs = tmp_path / "runs"
    result = cli("train", "--preset", "smoke", "data.name=digits", item, "--runs-dir", str(runs))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert not runs.exists()


def test_every_number_in_the_schema_has_a_range() -> None:
    def walk(cls: type, prefix: str) -> typing.Iterator[tuple[str, dataclasses.Field]]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                yield from walk(hints[f.name], f"{prefix}{f.name}.")
            elif hints[f.name] in (int, float):
                yield f"{prefix}{f.name}", f

    numbers = dict(walk(Config, ""))
    assert len(numbers) >= 29  # as many as the schema has today
    missing = [key for key, f in numbers.items() if "range" not in f.metadata]
    assert not missing
    # Each default lies in its range, and each preset's values too.
    for preset in (None, "seed", "transfer", "smoke"):
        load_config(preset)


def test_yaml_keys_given_twice_or_aliased_are_refused(tmp_path: Path) -> None:
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  epochs: 3\ndata:\n  name: digits\ntrain:\n  batch_size: 8\n")
    with pytest.raises(ConfigError, match=r"line 5: 'train' is given twice \(first on line 1\)"):
        load_config(file=twice)
    inner = tmp_path / "inner.yaml"
    inner.write_text("train: {epochs: 3, epochs: 4}\n")
    with pytest.raises(ConfigError, match="'epochs' is given twice"):
        load_config(file=inner)
    # An alias can make a small file expand without end ("billion laughs"): not in a config.
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text('a: &a ["x", "x"]\nb: &b [*a, *a]\nc: [*b, *b]\n')
    with pytest.raises(ConfigError, match="aliases"):
        load_config(file=laughs)
    # A config.yaml in a run folder is read the same way (PyYAML alone keeps the second).
    from cnnkit.errors import RunError
    from cnnkit.runs import Run

    shutil.copy(twice, tmp_path / "config.yaml")
    with pytest.raises(RunError, match="given twice"):
        Run(tmp_path).config()


def test_a_link_into_another_class_folder_is_left_out_and_listed(tmp_path: Path) -> None:
    from cnnkit.config import DataConfig
    from cnnkit.data.folder import load

    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(6):
            pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{i}.png")
    os.symlink(tmp_path / "dog" / "0.png", tmp_path / "cat" / "really-a-dog.png")
    source = load(DataConfig(name="folder", path=str(tmp_path), image_size=8))
    assert len(source.train) + len(source.test) == 12  # the link is not a thirteenth image
    reasons = dict(source.skipped)
    assert (
        reasons[str(tmp_path / "cat" / "really-a-dog.png")]
        == "symbolic link into another class folder"
    )


def test_evaluate_on_another_source_drops_the_runs_own_path(
    untrained_run: Path, tmp_path: Path
) -> None:
    # A run trained on a folder, evaluated on the built-in digits (the same classes).
    copy = tmp_path / "folder-run"
    shutil.copytree(untrained_run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["data"].update(name="folder", path=str(tmp_path / "gone"))
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    result = cli("evaluate", str(copy), "data.name=digits")
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout


def test_model_params_the_layers_cannot_take_are_config_errors(tmp_path: Path) -> None:
    result = cli("train", "--preset", "smoke", "data.name=digits", "model.params.filters=[-4]",
                 "--runs-dir", str(tmp_path / "runs"))  # fmt: skip
    assert result.returncode == 2 and "cannot be built with model.params" in result.stderr
    assert not (tmp_path / "runs").exists()
