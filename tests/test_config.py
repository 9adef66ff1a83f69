from __future__ import annotations

from pathlib import Path

import pytest

from cnnkit.config import PRESETS, Config, load_config, parse_override, valid_keys
from cnnkit.errors import ConfigError


def test_defaults_are_the_tutorial_recipe() -> None:
    cfg = load_config("seed")
    assert cfg.train.optimizer == "adam"
    assert cfg.train.learning_rate == 1e-4
    assert cfg.train.batch_size == 64
    assert cfg.train.epochs == 100
    assert cfg.data.val_split == 0.2
    assert (cfg.augment.rotation, cfg.augment.shift, cfg.augment.flip) == (15.0, 0.1, True)
    assert cfg.model.name == "seed_cnn"
    assert cfg.name == "seed"


def test_precedence_defaults_preset_file_cli(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("train:\n  epochs: 7\n  batch_size: 32\nseed: 5\n")
    cfg = load_config("smoke", file, ["train.batch_size=16"])
    assert cfg.data.train_subset == PRESETS["smoke"]["data.train_subset"]  # from the preset
    assert cfg.train.epochs == 7  # the file beats the preset
    assert cfg.train.batch_size == 16  # the command line beats the file
    assert cfg.seed == 5
    assert cfg.train.learning_rate == PRESETS["smoke"]["train.learning_rate"]


def test_round_trip_through_yaml() -> None:
    import yaml

    cfg = load_config("smoke", overrides=["model.params.dense=64", "data.path=/x"])
    assert Config.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg
    assert cfg.model.params == {"dense": 64}


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("train.learning_rate=1e-4", 1e-4),
        ("train.epochs=3", 3),
        ("augment.flip=false", False),
        ("data.path=none", None),
        ("model.params.filters=[8, 16]", [8, 16]),
    ],
)
def test_override_values_are_typed(item: str, expected: object) -> None:
    key, _ = parse_override(item)
    cfg = load_config(overrides=[item])
    node: object = cfg
    for part in key.split(".")[:-1]:
        node = getattr(node, part)
    last = key.split(".")[-1]
    value = node[last] if isinstance(node, dict) else getattr(node, last)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("train.epoch=3", "did you mean 'train.epochs'"),
        ("epochs=3", "did you mean 'train.epochs'"),
        ("data.nmae=digits", "did you mean 'data.name'"),
        ("train.epochs=three", "needs a whole number"),
        ("train.epochs=2.5", "needs a whole number"),
        ("train.learning_rate=fast", "needs a number"),
        ("augment.flip=maybe", "true or false"),
        ("train.precision=bf8", "one of auto, bf16, fp32"),
        ("train.epochs=0", "must be in [1, 100,000]"),
        ("data.val_split=1.5", "must be in [0, 1)"),
        ("train.epochs", "expected key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors(item: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[item])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_key_in_file_names_the_closest(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("train:\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"did you mean 'train\.learning_rate'"):
        load_config(file=file)


@pytest.mark.parametrize(
    ("text", "message"), [("[1, 2]", "must hold a mapping"), ("a: [", "not readable YAML")]
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(file=file)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(file=tmp_path / "missing.yaml")


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="did you mean 'smoke'"):
        load_config("smok")


def test_config_is_frozen_and_replace_checks_keys() -> None:
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]
    assert cfg.replace(**{"train.epochs": 2}).train.epochs == 2
    with pytest.raises(ConfigError):
        cfg.replace(**{"train.epoch": 2})
    assert "train.epochs" in valid_keys() and "model.params" in valid_keys()


def test_fast_is_the_default_and_seed_stays_the_tutorial() -> None:
    default, fast, seed = load_config(), load_config("fast"), load_config("seed")
    assert default == fast and fast.model.name == "fast_cnn" and fast.train.tta == 2
    assert seed.model.name == "seed_cnn" and seed.train.optimizer == "adam"
    assert seed.train.learning_rate == 1e-4 and seed.augment.translate == 0
