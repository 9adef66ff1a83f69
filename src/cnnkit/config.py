"""Typed, frozen configuration: defaults < preset < YAML file < command-line ``key=value``.

Every run saves its resolved config as ``config.yaml``; :func:`load_config` and
:func:`Config.from_dict` turn such a file back into the same object. Unknown keys and wrong
types are :class:`~cnnkit.errors.ConfigError` naming the closest valid key.

This module imports nothing heavy: ``cnnkit config`` answers without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cnnkit.errors import ConfigError


def _choice(*values: str) -> dict[str, Any]:
    return {"choices": values}


@dataclass(frozen=True)
class Range:
    """The values a numeric key takes: ``low``..``high``, either end open or closed, and
    optionally 0 beside them (as "off" or "automatic"). Every number in a config has one, so that
    no value a run cannot use (5 for a probability, inf for a rate) is saved into a run."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    zero: str = ""  # what 0 means, where 0 is allowed outside [low, high]

    def __contains__(self, value: float) -> bool:
        if self.zero and value == 0:
            return True
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return bool(above and below)

    def __str__(self) -> str:
        def number(x: float) -> str:
            return f"{x:,.0f}" if x == int(x) and abs(x) >= 1000 else f"{x:g}"

        text = (
            f"{'(' if self.low_open else '['}{number(self.low)}, "
            f"{number(self.high)}{')' if self.high_open else ']'}"
        )
        return f"0 ({self.zero}) or in {text}" if self.zero else f"in {text}"


def _within(
    low: float, high: float, low_open: bool = False, high_open: bool = False, zero: str = ""
) -> dict[str, Any]:
    return {"range": Range(low, high, low_open, high_open, zero)}


def _check_ranges(section: Any, prefix: str) -> None:
    """Every field of ``section`` with a range holds a value inside it."""
    for f in dataclasses.fields(section):
        allowed = f.metadata.get("range")
        value = getattr(section, f.name)
        if allowed is not None and value not in allowed:
            raise ConfigError(f"config key '{prefix}{f.name}' must be {allowed}, got {value!r}")


RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a run folder's name
MANY = 1_000_000_000  # the top of counts that have no natural limit (images, steps, epochs)


@dataclass(frozen=True)
class DataConfig:
    """Where images come from and how they are split."""

    # cifar10, cifar100, mnist, fashion_mnist, digits, synthetic, or folder (with data.path).
    name: str = "cifar10"
    # An archive or folder; when empty: $CNNKIT_DATA_DIR, then the user cache, then a download.
    # For data.name=folder: DIR/<class>/*.jpg|png|..., or DIR/train, DIR/val, DIR/test laid out so.
    path: str | None = None
    # Fraction of the training set held out for validation, stratified and seeded (the tutorial's 20 %).
    # A folder with its own val/ part uses that instead.
    val_split: float = field(default=0.2, metadata=_within(0.0, 1.0, high_open=True))
    # Where a source has no test part (a folder without test/): this fraction of it, stratified,
    # always drawn with seed 0 so that runs with different seeds are tested on the same images.
    test_split: float = field(default=0.2, metadata=_within(0.0, 1.0, True, True))
    # Square side in pixels every image is resized to (the same at train and predict time).
    # 0: the source's own size; for a folder, the median of its images' sides, at most 128.
    image_size: int = field(default=0, metadata=_within(8, 1024, zero="automatic"))
    # CIFAR-100: "fine" (100 classes) or "coarse" (20 superclasses).
    label: str = field(default="fine", metadata=_choice("fine", "coarse"))
    # Decoded folder images: memory (all in RAM), disk (a decoded copy in the user cache, read a
    # batch at a time and reused by later runs), none (decoded from the files for every batch),
    # auto (memory when they fit in cache_mb, else disk).
    cache: str = field(default="auto", metadata=_choice("auto", "memory", "disk", "none"))
    cache_mb: int = field(default=2048, metadata=_within(0, MANY))
    # Where there is no validation split and train.calibrate is on: this fraction of the training
    # images, stratified and seeded, is held out to calibrate the probabilities (2,500 of
    # CIFAR-10's 50,000). 0 holds none: the probabilities are then left uncalibrated. Why 5 %:
    # docs/calibration.md (with 1,000 images the fitted temperature varies enough to leave the
    # test calibration error above 2 % in some draws; with 2,000 or more it did not).
    calibration_split: float = field(default=0.05, metadata=_within(0.0, 1.0, high_open=True))
    # Keep a stratified sample of this many training (and test) images; 0 keeps them all.
    train_subset: int = field(default=0, metadata=_within(0, MANY))
    test_subset: int = field(default=0, metadata=_within(0, MANY))
    # Allow downloading the official archive when no local copy is found.
    download: bool = True

    def __post_init__(self) -> None:
        _check_ranges(self, "data.")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; the tutorial's ImageDataGenerator settings by default."""

    enabled: bool = True
    rotation: float = field(default=15.0, metadata=_within(0.0, 180.0))  # degrees, either way
    # Fraction of height and width, either way.
    shift: float = field(default=0.1, metadata=_within(0.0, 1.0, high_open=True))
    flip: bool = True  # horizontal
    fill_mode: str = field(default="nearest", metadata=_choice("nearest", "reflect", "constant"))
    # Random crops of the image reflect-padded by this many pixels, drawn anew each epoch.
    translate: int = field(default=0, metadata=_within(0, 16))
    # Flip a fixed random half of the images, then all of them every other epoch (derandomised
    # flips: every image is seen both ways within two epochs), instead of random flips.
    alternate_flip: bool = False

    def __post_init__(self) -> None:
        _check_ranges(self, "augment.")


@dataclass(frozen=True)
class ModelConfig:
    """Which registered factory builds the network, and its keyword arguments."""

    name: str = "seed_cnn"
    params: dict[str, Any] = field(default_factory=dict)
    # Pretrained backbones (resnet50, mobilenet_v2, efficientnet_b0): imagenet (downloaded by
    # Keras when online), none (random), or the path of a weights file; auto: imagenet for those,
    # none for cnnkit's own networks.
    weights: str = "auto"


@dataclass(frozen=True)
class TrainConfig:
    """How the network is fitted. The defaults are the tutorial's recipe."""

    epochs: int = field(default=100, metadata=_within(1, 100_000))
    batch_size: int = field(default=64, metadata=_within(1, 65_536))
    # nesterov: the fast recipe's SGD (cnnkit.optim), learning_rate and weight_decay per 1024 examples.
    optimizer: str = field(default="adam", metadata=_choice("adam", "adamw", "sgd", "nesterov"))
    learning_rate: float = field(default=1e-4, metadata=_within(0.0, 1e6, low_open=True))
    weight_decay: float = field(default=0.0, metadata=_within(0.0, 10.0))  # not for adam
    # sgd and nesterov.
    momentum: float = field(default=0.9, metadata=_within(0.0, 1.0, high_open=True))
    # constant, or linear: warm up from 20 % over the first `warmup` share of steps, then down to
    # `lr_end` times the peak rate at the last step.
    schedule: str = field(default="constant", metadata=_choice("constant", "linear"))
    warmup: float = field(default=0.0, metadata=_within(0.0, 1.0, high_open=True))
    lr_end: float = field(default=0.0, metadata=_within(0.0, 1.0))
    label_smoothing: float = field(default=0.0, metadata=_within(0.0, 1.0, high_open=True))
    # nesterov: learning-rate multiplier of BatchNorm biases.
    bias_lr_scale: float = field(default=1.0, metadata=_within(0.0, 10_000.0, low_open=True))
    # nesterov: pull the weights towards a slow copy every this many steps (0: never).
    lookahead: int = field(default=0, metadata=_within(0, MANY))
    # nesterov: freeze the whitening layer's bias after this many epochs (0: never).
    whiten_bias_epochs: int = field(default=0, metadata=_within(0, 100_000))
    # Test-time augmentation for evaluate and predict: 0 none, 1 mirror, 2 mirror and 1-pixel shifts.
    tta: int = field(default=0, metadata=_within(0, 2))
    # Seconds of training to fit in: the epochs are set from a measured speed (0: use `epochs`).
    budget: float = field(default=0.0, metadata=_within(0.0, 1e7))
    # auto: mixed_bfloat16 on a GPU or a CPU with bf16 instructions, float32 elsewhere.
    precision: str = field(default="auto", metadata=_choice("auto", "bf16", "fp32"))
    # Stop after this many epochs without improvement of `monitor`; 0 never stops early.
    early_stopping: int = field(default=0, metadata=_within(0, 100_000))
    monitor: str = field(default="val_accuracy", metadata=_choice("val_accuracy", "val_loss"))
    # Which weights become the run's model.keras: the best by `monitor`, or the last epoch's.
    keep: str = field(default="best", metadata=_choice("best", "last"))
    # Fit a temperature on held-out images after training (the validation split, or else
    # data.calibration_split) and make it the saved model's last layer, so that every probability
    # cnnkit gives is calibrated; false keeps the network's own (see docs/calibration.md).
    calibrate: bool = True
    # Batch size for evaluation and prediction (does not change results, only speed).
    eval_batch_size: int = field(default=512, metadata=_within(1, 65_536))
    # Besides every epoch's end, commit a checkpoint every this many steps (0: epochs only).
    checkpoint_steps: int = field(default=0, metadata=_within(0, MANY))
    # Bit-identical results for the same seed on the same machine and backend (costs some speed).
    deterministic: bool = False
    # data_parallel: train over every device of every process with keras.distribution (JAX
    # backend); batch_size is then the global batch. Processes join from the environment
    # (cnnkit launch, KERAS_DISTRIBUTION_*, Slurm, Open MPI); see docs/distributed.md.
    distribute: str = field(default="none", metadata=_choice("none", "data_parallel"))
    # balanced: weight each class's loss by n_images / (n_classes * n_class_images) (scikit-learn's
    # "balanced"), so that rare classes count as much as common ones.
    class_weight: str = field(default="none", metadata=_choice("none", "balanced"))
    # Transfer learning: train only the head for this many epochs with the backbone frozen, then
    # fine-tune the backbone's top `finetune_layers` layers (0: all of it) with the learning rate
    # times `finetune_lr_scale`. BatchNorm layers of the backbone stay in inference mode throughout.
    freeze_epochs: int = field(default=0, metadata=_within(0, 100_000))
    finetune_layers: int = field(default=0, metadata=_within(0, 100_000))
    finetune_lr_scale: float = field(default=0.1, metadata=_within(0.0, 1000.0, low_open=True))
    # Also log every epoch's metrics for TensorBoard (Keras's callback) into RUN/tensorboard.
    tensorboard: bool = False

    def __post_init__(self) -> None:
        _check_ranges(self, "train.")


@dataclass(frozen=True)
class ReportConfig:
    """The report page written at the end of training (``cnnkit report RUN`` redraws it)."""

    # false: no report.html or figures/ at the end of train (metrics, predictions still saved).
    enabled: bool = True


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run."""

    seed: int = field(default=0, metadata=_within(0, 2**32 - 1))  # what NumPy seeds take
    # Run folder name (letters, digits, '.', '_', '-'); empty: the preset's name, or "train".
    name: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        _check_ranges(self, "")
        if self.name and not RUN_NAME.match(self.name):
            raise ConfigError(
                f"config key 'name' must be letters, digits, '.', '_' or '-' (a folder name), "
                f"got {self.name!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        return _build(cls, flatten(values), prefix="")

    def replace(self, **overrides: Any) -> Config:
        """A copy with dotted keys changed, e.g. ``cfg.replace(**{"train.epochs": 1})``."""
        flat = flatten(self.to_dict())
        for key, value in overrides.items():
            _check_key(key)
            flat[key] = value
        return _build(Config, flat, prefix="")


# Presets are dotted overrides on top of the defaults (the tutorial's recipe), so each one reads
# as a diff. `cnnkit train` without --preset uses DEFAULT_PRESET.
DEFAULT_PRESET = "fast"
PRESETS: dict[str, dict[str, Any]] = {
    # airbench94's recipe (Keller Jordan), in Keras: whitened first layer, BatchNorm, Nesterov SGD
    # with per-example rates, warm-up then linear decay, label smoothing, lookahead, reflect-padded
    # crops, alternating flips, and test-time augmentation. All 50,000 images train (no
    # validation split), as in the original.
    "fast": {
        "model.name": "fast_cnn",
        "data.val_split": 0.0,
        "augment.rotation": 0.0,
        "augment.shift": 0.0,
        "augment.translate": 2,
        "augment.alternate_flip": True,
        "train.epochs": 10,
        "train.batch_size": 1024,
        "train.optimizer": "nesterov",
        "train.learning_rate": 11.5,  # per 1024 examples
        "train.weight_decay": 0.0153,  # per 1024 examples
        "train.momentum": 0.85,
        "train.schedule": "linear",
        "train.warmup": 0.23,
        "train.lr_end": 0.07,
        "train.label_smoothing": 0.2,
        "train.bias_lr_scale": 64.0,
        "train.lookahead": 5,
        "train.whiten_bias_epochs": 3,
        "train.tta": 2,
        "train.keep": "last",
        "train.eval_batch_size": 1000,
    },
    # The tutorial, exactly: Adam 1e-4, batch 64, 100 epochs, ImageDataGenerator-style augmentation,
    # evaluated with the weights of the last epoch.
    "seed": {"train.keep": "last"},
    # Transfer learning from ImageNet (keras.applications MobileNetV2 at 96x96): three epochs
    # of the head alone, then three fine-tuning the top of the backbone at a tenth of the rate.
    "transfer": {
        "model.name": "mobilenet_v2",
        "data.image_size": 96,
        "augment.rotation": 0.0,
        "train.epochs": 6,
        "train.batch_size": 32,
        "train.learning_rate": 1e-3,
        "train.freeze_epochs": 3,
        "train.finetune_layers": 40,
        "train.finetune_lr_scale": 0.1,
    },
    # Seconds, for trying things: a stratified sample of CIFAR-10 and two epochs.
    "smoke": {
        "data.train_subset": 2000,
        "data.test_subset": 500,
        "train.epochs": 2,
        "train.learning_rate": 1e-3,
    },
}


def list_presets() -> list[str]:
    """The preset names ``--preset`` takes (``cnnkit config --presets`` shows what each changes)."""
    return sorted(PRESETS)


def load_config(
    preset: str | None = None,
    file: str | Path | None = None,
    overrides: Iterable[str] = (),
) -> Config:
    """Resolve a config: defaults < preset < YAML file < ``key=value`` overrides.

    ``preset=None`` takes DEFAULT_PRESET (what `cnnkit train` uses); ``preset=""`` takes none.
    """
    flat = flatten(Config().to_dict())
    if preset is None:
        preset = DEFAULT_PRESET
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}{did_you_mean(preset, PRESETS)}")
        flat.update(PRESETS[preset])
        flat["name"] = preset
    if file is not None:
        for key, value in flatten(read_yaml(Path(file))).items():
            _check_key(key)
            flat[key] = value
    for item in overrides:
        key, value = parse_override(item)
        flat[key] = value
    return _build(Config, flat, prefix="")


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.epochs=3"`` -> ``("train.epochs", 3)``; the value is read as YAML."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"expected key=value, got {item!r} (for example train.epochs=10)")
    _check_key(key)
    return key, _parse_scalar(text)


def _parse_scalar(text: str) -> Any:
    # YAML 1.1 reads "1e-4" as a string; numbers are tried first so that it is a float.
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


# ----------------------------------------------------------------------------- changing a run

# Changing these on resume moves nothing but where the data is read from (report.* too: it
# only decides what is drawn at the end).
RESUME_FREE = ("data.path", "data.download", "data.cache", "data.cache_mb", "report.",
               "train.distribute")  # fmt: skip
# These define the model, the data or the optimizer's variables: a checkpoint cannot carry over
# a change to them, even with --force (train a new run instead).
RESUME_FIXED = ("seed", "name", "data.", "augment.", "model.", "train.optimizer",
                "train.batch_size", "train.precision", "train.calibrate")  # fmt: skip


def resume_config(
    config: Config, overrides: Iterable[str], force: bool = False
) -> tuple[Config, dict[str, Any]]:
    """``config`` with a resume's ``key=value`` overrides applied, and the keys that changed
    something the checkpoint was trained with (what run.json records).

    Keys in RESUME_FREE may always change; RESUME_FIXED ones never; any other change (such as
    ``train.epochs`` to train longer) needs ``force``.
    """
    changes = dict(parse_override(item) for item in overrides)
    current = flatten(config.to_dict())
    changed = {
        k: v for k, v in changes.items() if not k.startswith(RESUME_FREE) and current.get(k) != v
    }
    fixed = [k for k in changed if k.startswith(RESUME_FIXED)]
    if fixed:
        raise ConfigError(
            f"{', '.join(fixed)} cannot change on resume (the checkpoint depends on it); "
            f"train a new run with the new setting instead"
        )
    if changed and not force:
        listed = ", ".join(f"{k}: {current.get(k)!r} -> {v!r}" for k, v in changed.items())
        raise ConfigError(
            f"resume keeps the run's config, and this would change it ({listed}); "
            f"add --force to change it anyway (the change is recorded in run.json)"
        )
    return config.replace(**changes), changed


def with_data_overrides(config: Config, overrides: Iterable[str], verb: str) -> Config:
    """``config`` with ``data.*`` overrides only (where a run's data is on this machine), for the
    verbs that read a finished run (evaluate, report)."""
    changes = dict(parse_override(item) for item in overrides)
    for key in changes:
        if not key.startswith("data."):
            raise ConfigError(
                f"{verb} takes data.* overrides only (such as data.path), not {key!r}"
            )
    if changes.get("data.name", config.data.name) != config.data.name:
        # Another source: the run's data.path was where the old one lived, not this one.
        changes.setdefault("data.path", None)
    return config.replace(**changes)


MAX_YAML_BYTES = 1_000_000  # a config is a few hundred bytes; anything this large is not one


class _StrictLoader(yaml.SafeLoader):
    """YAML as a person writes a config: a key given twice, or an alias (``*name``, which can
    make a small file expand into a huge one), is an error rather than silently resolved."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(
                f"{self.name}, line {mark.line + 1}: YAML aliases (*name) are not allowed "
                f"in a config; write the value out"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and key in seen:
                raise ConfigError(
                    f"{self.name}, line {line}: {key!r} is given twice (first on line "
                    f"{seen[key]}); merge the two into one"
                )
            if isinstance(key, str | int | float | bool):
                seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file holding a mapping (``what`` names it in errors): strict (no duplicate keys,
    no aliases), at most MAX_YAML_BYTES, every failure a ConfigError."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
        if len(data) > MAX_YAML_BYTES:
            raise ConfigError(
                f"{what} {path} is larger than {MAX_YAML_BYTES:,} bytes; not a config"
            )
        loader = _StrictLoader(data.decode("utf-8"))
        loader.name = str(path)
        try:
            loaded = loader.get_single_data()
        finally:
            loader.dispose()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder, not a YAML file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{what} {path} is not readable YAML: {reason}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of keys, not {type(loaded).__name__}")
    return loaded


# ----------------------------------------------------------------------------- key checking


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def valid_keys() -> list[str]:
    """Every dotted key a config accepts (``model.params.*`` is free-form)."""
    return list(_valid_keys())


@functools.cache
def _valid_keys() -> tuple[str, ...]:
    # The schema is fixed: derived once (get_type_hints is slow: 3 s per config without this).
    keys: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            hint = _field_types(cls)[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{f.name}.")
            else:
                keys.append(f"{prefix}{f.name}")

    walk(Config, "")
    return tuple(keys)


def key_type(key: str) -> type | None:
    """The type a dotted key holds (bool, int, float or str); None for the free-form
    ``model.params.*``. An unknown key is a ConfigError that names the closest valid one."""
    _check_key(key)
    if key.startswith("model.params."):
        return None
    cls: Any = Config
    *sections, last = key.split(".")
    for section in sections:
        cls = _field_types(cls)[section]
    hint = _field_types(cls)[last]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint  # type: ignore[no-any-return]


def _check_key(key: str) -> None:
    if key.startswith("model.params.") and len(key) > len("model.params."):
        return
    keys = _valid_keys()
    if key not in keys:
        raise ConfigError(f"unknown config key {key!r}{did_you_mean(key, keys)}")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    if not close:
        # Fall back to the key with the same last part ("epochs" -> "train.epochs").
        tail = word.rsplit(".", 1)[-1]
        close = [c for c in choices if c.rsplit(".", 1)[-1] == tail][:1]
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; valid: {', '.join(sorted(choices))}"


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if (
            isinstance(value, Mapping)
            and dotted != "model.params"
            and not dotted.startswith("model.params.")
        ):
            flat.update(flatten(value, f"{dotted}."))
        elif isinstance(value, Mapping) and dotted == "model.params":
            if not value:
                flat[dotted] = {}
            for name, item in value.items():
                flat[f"{dotted}.{name}"] = item
        else:
            flat[dotted] = value
    return flat


# ----------------------------------------------------------------------------- building

T = TypeVar("T")


def _build(cls: type[T], flat: Mapping[str, Any], prefix: str) -> T:
    for key in flat:
        _check_key(key)
    kwargs: dict[str, Any] = {}
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = f"{prefix}{f.name}"
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(hint, flat, f"{key}.")  # type: ignore[arg-type]
        elif key == "model.params":
            params = {
                k[len("model.params.") :]: v
                for k, v in flat.items()
                if k.startswith("model.params.")
            }
            kwargs[f.name] = params
        elif key in flat:
            kwargs[f.name] = _coerce(key, flat[key], hint, f.metadata.get("choices"))
    return cls(**kwargs)


def _coerce(key: str, value: Any, hint: Any, choices: tuple[str, ...] | None) -> Any:
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null")):
        if optional:
            return None
        raise ConfigError(f"config key {key!r} needs a {hint.__name__}, got nothing")
    result: Any
    if hint is bool:
        result = _to_bool(key, value)
    elif hint is int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or int(value) != value
        ):
            raise _type_error(key, value, "a whole number")
        result = int(value)
    elif hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise _type_error(key, value, "a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(key, value, "a number")
        result = float(value)
    elif hint is str:
        if isinstance(value, Mapping | list):
            raise _type_error(key, value, "a string")
        result = str(value)
    else:  # pragma: no cover - a field type this module does not know
        raise TypeError(f"unsupported config type {hint!r} for {key}")
    if choices is not None and result not in choices:
        raise ConfigError(
            f"config key {key!r} must be one of {', '.join(choices)}, got {result!r}"
            f"{did_you_mean(str(result), choices) if isinstance(result, str) else ''}"
        )
    return result


def _to_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "true",
        "yes",
        "on",
        "1",
        "false",
        "no",
        "off",
        "0",
    ):
        return value.lower() in ("true", "yes", "on", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _type_error(key, value, "true or false")


def _type_error(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config key {key!r} needs {expected}, got {value!r}")
