"""Datasets: one module per source, all returning the same :class:`Dataset`.

``load_dataset(cfg, seed)`` reads the source, takes the optional stratified subsets, and holds out
the validation split (unless the source has its own), every step seeded by the run's seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from cnnkit.config import DataConfig
from cnnkit.data.base import Dataset, Source, Split, stratified_split, stratified_subset
from cnnkit.errors import ConfigError, did_you_mean

__all__ = ["Dataset", "Source", "Split", "held_out_share", "list_datasets", "load_dataset"]


def _cifar10(cfg: DataConfig) -> Source:
    from cnnkit.data import cifar

    return cifar.load(cfg.path, cfg.download)


def _cifar100(cfg: DataConfig) -> Source:
    from cnnkit.data import cifar100

    return cifar100.load(cfg.path, cfg.download, cfg.label)


def _mnist(cfg: DataConfig) -> Source:
    from cnnkit.data import idx

    return idx.load("mnist", cfg.path, cfg.download)


def _fashion_mnist(cfg: DataConfig) -> Source:
    from cnnkit.data import idx

    return idx.load("fashion_mnist", cfg.path, cfg.download)


def _digits(cfg: DataConfig) -> Source:
    from cnnkit.data import digits

    return digits.load()


def _synthetic(cfg: DataConfig) -> Source:
    from cnnkit.data import synthetic

    return synthetic.load()


def _folder(cfg: DataConfig) -> Source:
    from cnnkit.data import folder

    return folder.load(cfg)


def _table(cfg: DataConfig) -> Source:
    from cnnkit.data import table

    return table.load(cfg)


def _hf(cfg: DataConfig) -> Source:
    from cnnkit.data import hf

    return hf.load(cfg)


_SOURCES: dict[str, Callable[[DataConfig], Source]] = {
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "mnist": _mnist,
    "fashion_mnist": _fashion_mnist,
    "digits": _digits,
    "synthetic": _synthetic,
    "folder": _folder,
    "table": _table,
    "hf": _hf,
}
# Sources decoded from image files at data.image_size already (no resizing after).
_DECODED = frozenset({"folder", "table", "hf"})


def list_datasets() -> list[str]:
    """The dataset names ``data.name`` takes."""
    return sorted(_SOURCES)


def load_dataset(cfg: DataConfig, seed: int, calibrate: bool = False, frame: Any = None) -> Dataset:
    """Read ``cfg.name`` and split it: subsets and validation split are stratified and seeded.

    ``frame``: a pandas DataFrame to read as the label table (``data.name=table``; its relative
    paths are read from the current folder), in place of the file at ``data.path``.

    ``calibrate`` (a training run's ``train.calibrate``): where there is no validation split,
    hold out ``cfg.calibration_split`` of the training images to calibrate on (as
    ``Dataset.held_out``; :attr:`Dataset.calibration` is the split to calibrate on either way).
    """
    if cfg.name not in _SOURCES:
        raise ConfigError(
            f"unknown dataset data.name={cfg.name!r}{did_you_mean(cfg.name, _SOURCES)}"
        )
    if cfg.path and cfg.name in ("digits", "synthetic"):
        raise ConfigError(f"data.name={cfg.name} is built in and takes no data.path")
    if frame is not None:
        if cfg.name != "table":
            raise ConfigError(f"a DataFrame is read as data.name=table, not {cfg.name}")
        from cnnkit.data import table

        src = table.load(cfg, frame)
    else:
        src = _SOURCES[cfg.name](cfg)
    splits = [src.train, src.test, src.val]
    if cfg.image_size and cfg.name not in _DECODED:
        from cnnkit.resources import require_data_memory

        count = sum(len(s) for s in splits if s is not None and s.in_memory)
        channels = src.train.x.shape[-1]
        require_data_memory(
            count, (cfg.image_size, cfg.image_size, channels), f"data.name={cfg.name}"
        )
        splits = [_resized(s, cfg.image_size) for s in splits]
    train, test, val = splits
    assert train is not None and test is not None
    train = stratified_subset(train, cfg.train_subset, seed)
    test = stratified_subset(test, cfg.test_subset, seed)
    if val is None:
        train, val = stratified_split(train, cfg.val_split, seed)
    held_out = None
    if calibrate and val is None and cfg.calibration_split > 0:
        # At least one image of each class (sklearn's stratification needs it), when the rest
        # keeps at least that many too; a dataset too small for both stays whole.
        classes = len(src.class_names)
        count = max(math.ceil(cfg.calibration_split * len(train)), classes)
        if len(train) - count >= classes:
            train, held_out = stratified_split(train, count, seed, "calibration")
    return Dataset(
        cfg.name, src.class_names, train, val, test, src.location, src.skipped, src.notes,
        held_out,
    )  # fmt: skip


def held_out_share(cfg: DataConfig, calibrate: bool) -> float:
    """The share of the training images :func:`load_dataset` holds out (validation, or else
    calibration), for plans made before it splits (``train.budget``)."""
    if cfg.val_split > 0:
        return cfg.val_split
    return cfg.calibration_split if calibrate else 0.0


def _resized(split: Split | None, size: int) -> Split | None:
    from cnnkit.data.images import resize_images

    if split is None or not split.in_memory:
        return split
    return Split(resize_images(split.x, size), split.y, split.files)  # type: ignore[arg-type]
