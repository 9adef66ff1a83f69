"""The configuration's schema: frozen dataclasses, one per section, whose fields carry all that
is known about a key as metadata (:func:`~cnnkit.config.fields.setting`): what it means, the
values it allows, whether it may change when a run resumes and whether ``cnnkit tune`` may
search it; and the walk over it (every key, its type and rules, building a section from keys).

Every other place that needs such a fact asks here: resuming
(:func:`cnnkit.config.resume_config`), the search space (:mod:`cnnkit.tuning.space`), and the
site's configuration reference (:mod:`cnnkit.config.reference`).

Over 500 lines: most of it is the keys' own documentation, one ``setting`` per key, which the
reference is generated from; split by section it would scatter what a reader compares.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cnnkit.config.fields import (
    FIXED,
    FORCE,
    FREE,
    Range,
    check_ranges,
    coerce,
    flatten,
    setting,
    within,
)
from cnnkit.errors import ConfigError, did_you_mean

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a run folder's name
MANY = 1_000_000_000  # the top of counts that have no natural limit (images, steps, epochs)


@dataclass(frozen=True)
class DataConfig:
    """Where images come from and how they are split."""

    name: str = setting(
        "cifar10",
        "The dataset: `cifar10`, `cifar100`, `mnist`, `fashion_mnist`, `digits` (scikit-learn's "
        "8x8 digits, offline), `synthetic` (generated colours), or your images at `data.path`: "
        "`folder` (a folder per class), `table` (a CSV or Parquet table of image paths and "
        "labels) or `hf` (a Hugging Face dataset saved to disk).",
        resume=FIXED, search=False,
    )  # fmt: skip
    path: str | None = setting(
        None,
        "Where the dataset is: an archive, its extracted folder, or a folder holding either; "
        "for `folder`, `DIR/<class>/*.jpg|png|...` or `DIR/train|val|test/<class>/...`; for "
        "`table`, the `.csv` or `.parquet` file; for `hf`, the folder `save_to_disk` wrote or a "
        "folder of Parquet files. Empty: `$CNNKIT_DATA_DIR`, then the user cache, then a "
        "download.",
        resume=FREE, search=False,
    )  # fmt: skip
    val_split: float = setting(
        0.2,
        "Share of the training images held out for validation, stratified and seeded (the "
        "tutorial's 20 %). A folder with its own `val/` part uses that instead.",
        allowed=within(0.0, 1.0, high_open=True), resume=FIXED, search=False,
    )  # fmt: skip
    test_split: float = setting(
        0.2,
        "Where a source has no test part (a folder without `test/`): this share of it, "
        "stratified and always drawn with seed 0, so that runs with different seeds are tested "
        "on the same images.",
        allowed=within(0.0, 1.0, True, True), resume=FIXED, search=False,
    )  # fmt: skip
    image_size: int = setting(
        0,
        "Square side in pixels every image is resized to, at train and predict time alike. 0: "
        "the source's own size; for a folder, the median side of its images, at most 128.",
        allowed=within(8, 1024, zero="automatic"), resume=FIXED,
    )  # fmt: skip
    label: str = setting(
        "fine",
        "CIFAR-100's labels: `fine` (100 classes) or `coarse` (20 superclasses).",
        allowed=("fine", "coarse"), resume=FIXED,
    )  # fmt: skip
    cache: str = setting(
        "auto",
        "A folder's decoded images: `memory` (all in RAM), `disk` (a decoded copy in the user "
        "cache, read a batch at a time and reused while the files are unchanged), `none` "
        "(decoded for every batch); `auto` is memory when they fit in `data.cache_mb`, else disk.",
        allowed=("auto", "memory", "disk", "none"), resume=FREE,
    )  # fmt: skip
    cache_mb: int = setting(
        2048,
        "The most memory, in MB, that `data.cache=auto` gives a folder's decoded images.",
        allowed=within(0, MANY), resume=FREE,
    )  # fmt: skip
    calibration_split: float = setting(
        0.05,
        "Where there is no validation split and `train.calibrate` is on: this share of the "
        "training images, stratified and seeded, is held out to calibrate the probabilities "
        "(2,500 of CIFAR-10's 50,000). 0 holds none, and the probabilities stay uncalibrated.",
        allowed=within(0.0, 1.0, high_open=True), resume=FIXED,
    )  # fmt: skip
    train_subset: int = setting(
        0,
        "Train on a stratified sample of this many training images (0: all of them).",
        allowed=within(0, MANY, zero="all"), resume=FIXED,
    )  # fmt: skip
    test_subset: int = setting(
        0,
        "Test on a stratified sample of this many test images (0: all of them).",
        allowed=within(0, MANY, zero="all"), resume=FIXED, search=False,
    )  # fmt: skip
    download: bool = setting(
        True,
        "Allow downloading the official archive (md5-checked) when no local copy is found.",
        resume=FREE,
    )  # fmt: skip
    path_column: str = setting(
        "",
        "`table`: the column of image paths (relative to the table's folder, or absolute). "
        "Empty: the first of `path`, `filename`, `file`, `image`, `image_path` the table has.",
        resume=FIXED, search=False,
    )  # fmt: skip
    label_column: str = setting(
        "",
        "`table`: the column of labels (class names); `hf`: the label feature. Empty: the first "
        "of `label`, `labels`, `class`, `category` the table has (`hf`: its `ClassLabel` "
        "feature).",
        resume=FIXED, search=False,
    )  # fmt: skip
    split_column: str = setting(
        "",
        "`table`: a column saying each image's part (`train`, `val` or `validation`, `test`), "
        "used instead of random splits. Empty: `split` where the table has it, else none; "
        "`none`: ignore it.",
        resume=FIXED, search=False,
    )  # fmt: skip
    outside_paths: bool = setting(
        False,
        "`table`: allow absolute paths, and relative ones that leave the table's folder (through "
        "`..` or a symbolic link). Off: such rows are skipped and listed, so that a table from "
        "elsewhere reads nothing outside its own folder.",
        resume=FREE, search=False,
    )  # fmt: skip
    numeric_labels: bool = setting(
        False,
        "`table`: accept a label column that holds only numbers, as class names (`0`, `1`, ...). "
        "Off: such a column is refused, since it is more often an id or a count than a label.",
        resume=FIXED, search=False,
    )  # fmt: skip

    def __post_init__(self) -> None:
        check_ranges(self, "data.")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (Keras preprocessing layers and array operations); the
    tutorial's ImageDataGenerator settings by default. Never part of the saved model."""

    enabled: bool = setting(True, "Augment the training images at all.", resume=FIXED)
    rotation: float = setting(
        15.0, "Random rotations up to this many degrees either way.",
        allowed=within(0.0, 180.0), resume=FIXED,
    )  # fmt: skip
    shift: float = setting(
        0.1, "Random shifts up to this share of the height and width either way.",
        allowed=within(0.0, 1.0, high_open=True), resume=FIXED,
    )  # fmt: skip
    flip: bool = setting(True, "Random horizontal flips.", resume=FIXED)
    fill_mode: str = setting(
        "nearest", "How rotations and shifts fill the pixels they uncover.",
        allowed=("nearest", "reflect", "constant"), resume=FIXED,
    )  # fmt: skip
    translate: int = setting(
        0,
        "Random crops of the image reflect-padded by this many pixels, drawn anew each epoch "
        "(the fast recipe's; 0: none).",
        allowed=within(0, 16), resume=FIXED,
    )  # fmt: skip
    alternate_flip: bool = setting(
        False,
        "Flip a fixed random half of the images, then all of them every other epoch (every "
        "image is seen both ways within two epochs), instead of random flips.",
        resume=FIXED,
    )  # fmt: skip

    def __post_init__(self) -> None:
        check_ranges(self, "augment.")


@dataclass(frozen=True)
class ModelConfig:
    """Which registered factory builds the network (`cnnkit models`), and its arguments."""

    name: str = setting(
        "seed_cnn",
        "The registered model (`cnnkit models` lists them): `seed_cnn` (the tutorial's), "
        "`fast_cnn` (airbench94's), or a pretrained backbone for transfer learning.",
        resume=FIXED,
    )  # fmt: skip
    params: dict[str, Any] = setting(  # noqa: RUF009 (setting returns a dataclasses.field)
        doc="The model's keyword arguments, one key each (`model.params.dropout=0.3`); "
        "`cnnkit models` lists each model's with its default.",
        resume=FIXED, factory=dict,
    )  # fmt: skip
    weights: str = setting(
        "auto",
        "Pretrained backbones (`resnet50`, `mobilenet_v2`, `efficientnet_b0`): `imagenet` "
        "(downloaded by Keras when online), `none` (random), or a weights file; `auto`: "
        "imagenet for those, none for cnnkit's own networks.",
        resume=FIXED,
    )  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """How the network is fitted, evaluated and saved. The defaults are the tutorial's recipe."""

    epochs: int = setting(100, "Passes over the training images.", allowed=within(1, 100_000))
    batch_size: int = setting(
        64, "Images per optimizer step.", allowed=within(1, 65_536), resume=FIXED
    )
    optimizer: str = setting(
        "adam",
        "`adam`, `adamw`, `sgd` (Keras's, Nesterov momentum) or `nesterov` (the fast recipe's "
        "SGD: rates per 1024 examples, decoupled weight decay; `cnnkit.optim`).",
        allowed=("adam", "adamw", "sgd", "nesterov"), resume=FIXED,
    )  # fmt: skip
    learning_rate: float = setting(
        1e-4, "The peak learning rate (for `nesterov`: per 1024 examples).",
        allowed=within(0.0, 1e6, low_open=True),
    )  # fmt: skip
    weight_decay: float = setting(
        0.0, "Weight decay for `adamw`, `sgd` and `nesterov` (not `adam`).",
        allowed=within(0.0, 10.0),
    )  # fmt: skip
    momentum: float = setting(
        0.9, "Momentum of `sgd` and `nesterov`.", allowed=within(0.0, 1.0, high_open=True)
    )
    schedule: str = setting(
        "constant",
        "The learning rate over training: `constant`, or `linear` (warm up from 20 % over the "
        "first `train.warmup` share of steps, then down to `train.lr_end` times the peak).",
        allowed=("constant", "linear"),
    )  # fmt: skip
    warmup: float = setting(
        0.0, "Share of the steps that warm up (`train.schedule=linear`).",
        allowed=within(0.0, 1.0, high_open=True),
    )  # fmt: skip
    lr_end: float = setting(
        0.0, "The last step's rate, as a share of the peak (`train.schedule=linear`).",
        allowed=within(0.0, 1.0),
    )  # fmt: skip
    label_smoothing: float = setting(
        0.0, "Label smoothing of the cross-entropy loss.", allowed=within(0.0, 1.0, high_open=True)
    )
    bias_lr_scale: float = setting(
        1.0, "`nesterov`: learning-rate multiplier of the BatchNorm biases.",
        allowed=within(0.0, 10_000.0, low_open=True),
    )  # fmt: skip
    lookahead: int = setting(
        0, "`nesterov`: pull the weights towards a slow copy every this many steps (0: never).",
        allowed=within(0, MANY, zero="never"),
    )  # fmt: skip
    whiten_bias_epochs: int = setting(
        0, "`nesterov`: freeze the whitening layer's bias after this many epochs (0: never).",
        allowed=within(0, 100_000, zero="never"),
    )  # fmt: skip
    tta: int = setting(
        0,
        "Test-time augmentation (TTA) in evaluate and predict: the model answers for several "
        "views of each image and their logits are averaged. 0 one view, 1 the image and its "
        "mirror, 2 those and both shifted by one pixel (six views).",
        allowed=within(0, 2),
    )  # fmt: skip
    budget: float = setting(
        0.0,
        "Seconds of training to fit in: the epochs (and so the whole schedule), the batch and, "
        "for the fast network, its width are chosen from speeds measured on this machine "
        "(0: use `train.epochs`).",
        allowed=within(0.0, 1e7, zero="train.epochs decides"), search=False,
    )  # fmt: skip
    precision: str = setting(
        "auto",
        "`auto`: bf16 (mixed_bfloat16) on a GPU or a CPU with AMX or AVX512-BF16, fp32 "
        "elsewhere; or `bf16`, `fp32`.",
        allowed=("auto", "bf16", "fp32"), resume=FIXED,
    )  # fmt: skip
    early_stopping: int = setting(
        0, "Stop after this many epochs without improvement of `train.monitor` (0: never).",
        allowed=within(0, 100_000, zero="never"),
    )  # fmt: skip
    monitor: str = setting(
        "val_accuracy", "What \"best\" means for checkpoints, early stopping and `cnnkit tune`.",
        allowed=("val_accuracy", "val_loss"), search=False,
    )  # fmt: skip
    keep: str = setting(
        "best", "Which weights become the run's model.keras: the `best` by `train.monitor`, or "
        "the `last` epoch's.",
        allowed=("best", "last"), search=False,
    )  # fmt: skip
    calibrate: bool = setting(
        True,
        "Calibrate the probabilities after training: fit a temperature (or a scale per class, "
        "where it does better) on held-out images (the validation split, else "
        "`data.calibration_split`) and make it model.keras's last layer; false keeps the "
        "network's own.",
        resume=FIXED,
    )  # fmt: skip
    eval_batch_size: int = setting(
        512, "Images per batch in evaluation and prediction (speed only, not results).",
        allowed=within(1, 65_536),
    )  # fmt: skip
    checkpoint_steps: int = setting(
        0, "Besides every epoch's end, commit a checkpoint every this many steps (0: epochs only).",
        allowed=within(0, MANY, zero="at epochs' ends only"),
    )  # fmt: skip
    deterministic: bool = setting(
        False,
        "Bit-identical results for the same seed on the same machine and backend (costs some "
        "speed).",
    )  # fmt: skip
    distribute: str = setting(
        "none",
        "`data_parallel`: train over every device of every process with `keras.distribution` "
        "(JAX backend); `train.batch_size` is then the global batch.",
        allowed=("none", "data_parallel"), resume=FREE,
    )  # fmt: skip
    class_weight: str = setting(
        "none",
        "`balanced`: weight each class's loss by n_images / (n_classes x its images) "
        "(scikit-learn's), so that rare classes count as much as common ones.",
        allowed=("none", "balanced"),
    )  # fmt: skip
    freeze_epochs: int = setting(
        0, "Transfer learning: epochs that train only the new head, the backbone frozen.",
        allowed=within(0, 100_000),
    )  # fmt: skip
    finetune_layers: int = setting(
        0, "Transfer learning: after the frozen epochs, how many of the backbone's top layers "
        "fine-tune (0: all of it; its BatchNorm layers stay in inference mode).",
        allowed=within(0, 100_000),
    )  # fmt: skip
    finetune_lr_scale: float = setting(
        0.1, "Transfer learning: the fine-tuning epochs' learning rate, as a share of "
        "`train.learning_rate`.",
        allowed=within(0.0, 1000.0, low_open=True),
    )  # fmt: skip
    tensorboard: bool = setting(
        False,
        "Also log every epoch's metrics for TensorBoard into RUN/tensorboard (needs the "
        "`tensorboard` package).",
    )  # fmt: skip

    def __post_init__(self) -> None:
        check_ranges(self, "train.")


@dataclass(frozen=True)
class ReportConfig:
    """The report page written at the end of training (``cnnkit report RUN`` redraws it)."""

    enabled: bool = setting(
        True,
        "Write report.html and figures/ at the end of `cnnkit train` (the numbers are saved "
        "either way).",
        resume=FREE, search=False,
    )  # fmt: skip


@dataclass(frozen=True)
class Config:
    """Everything that defines a training run."""

    seed: int = setting(
        0,
        "Seeds Keras, NumPy and Python (`keras.utils.set_random_seed`) and every split.",
        allowed=within(0, 2**32 - 1), resume=FIXED, search=False,
    )  # fmt: skip
    name: str = setting(
        "",
        "The run folder's name (letters, digits, `.`, `_`, `-`); empty: the preset's name, or "
        "`train`. A folder that exists gets `-2`, `-3`, ... rather than being reused.",
        resume=FIXED, search=False,
    )  # fmt: skip
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def __post_init__(self) -> None:
        check_ranges(self, "")
        if self.name and not RUN_NAME.match(self.name):
            raise ConfigError(
                f"config key 'name' must be letters, digits, '.', '_' or '-' (a folder name), "
                f"got {self.name!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return str(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        return build(cls, flatten(values), prefix="")

    def replace(self, **overrides: Any) -> Config:
        """A copy with dotted keys changed, e.g. ``cfg.replace(**{"train.epochs": 1})``."""
        flat = flatten(self.to_dict())
        for key, value in overrides.items():
            check_key(key)
            flat[key] = value
        return build(Config, flat, prefix="")


def monitor_mode(monitor: str) -> str:
    """Whether ``train.monitor`` improves upwards (``max``: accuracy) or downwards (``min``: loss)."""
    return "min" if monitor.endswith("loss") else "max"


# ----------------------------------------------------------------------------- keys


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def fields_by_key() -> dict[str, tuple[type, dataclasses.Field[Any]]]:
    """Every key's section class and field, in the schema's order (derived once:
    get_type_hints is slow, 3 s per config without this)."""
    found: dict[str, tuple[type, dataclasses.Field[Any]]] = {}

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            hint = field_types(cls)[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, f"{prefix}{f.name}.")  # type: ignore[arg-type]
            else:
                found[f"{prefix}{f.name}"] = (cls, f)

    walk(Config, "")
    return found


def valid_keys() -> list[str]:
    """Every dotted key a config accepts (``model.params.*`` is free-form)."""
    return list(fields_by_key())


def check_key(key: str) -> None:
    """A ConfigError naming the closest valid key, for a key the schema does not have."""
    if key.startswith("model.params.") and len(key) > len("model.params."):
        return
    if key not in fields_by_key():
        raise ConfigError(f"unknown config key {key!r}{did_you_mean(key, fields_by_key())}")


def _schema_field(key: str) -> tuple[type, dataclasses.Field[Any]]:
    check_key(key)
    return fields_by_key()["model.params" if key.startswith("model.params.") else key]


def key_type(key: str) -> type | None:
    """The type a dotted key holds (bool, int, float or str); None for the free-form
    ``model.params.*``. An unknown key is a ConfigError that names the closest valid one."""
    if key.startswith("model.params"):
        check_key(key)
        return None
    cls, f = _schema_field(key)
    hint = field_types(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint  # type: ignore[no-any-return]


def key_range(key: str) -> Range | None:
    """The :class:`~cnnkit.config.fields.Range` a numeric key allows (None for other keys)."""
    found = _schema_field(key)[1].metadata.get("range")
    return found if isinstance(found, Range) else None


def resume_rule(key: str) -> str:
    """FREE, FORCE or FIXED: what a resume may do with ``key`` (:data:`RESUME_RULES`)."""
    return str(_schema_field(key)[1].metadata.get("resume", FORCE))


def searchable(key: str) -> bool:
    """Whether a ``cnnkit tune`` space may vary ``key``. Those it may not change what trials
    are compared on (the validation images, the metric, the seconds each trial gets) or name
    things."""
    return bool(_schema_field(key)[1].metadata.get("search", True))


# ----------------------------------------------------------------------------- building

T = TypeVar("T")


def build(cls: type[T], flat: Mapping[str, Any], prefix: str) -> T:
    """The section ``cls`` (at ``prefix``) from dotted keys, each value checked and coerced."""
    for key in flat:
        check_key(key)
    kwargs: dict[str, Any] = {}
    hints = field_types(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = f"{prefix}{f.name}"
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = build(hint, flat, f"{key}.")  # type: ignore[arg-type]
        elif key == "model.params":
            kwargs[f.name] = {
                k[len("model.params.") :]: v for k, v in flat.items()
                if k.startswith("model.params.")
            }  # fmt: skip
        elif key in flat:
            kwargs[f.name] = coerce(key, flat[key], hint, f.metadata.get("choices"))
    return cls(**kwargs)
