"""Datasets: one module per source, all returning the same in-memory :class:`Dataset`.

``load_dataset(cfg, seed)`` reads the source, takes the optional stratified subsets, and holds out
the validation split, every step seeded by the run's seed.
"""

from __future__ import annotations

from collections.abc import Callable

from cnnkit.config import DataConfig, did_you_mean
from cnnkit.data.base import Dataset, Split, stratified_split, stratified_subset
from cnnkit.errors import ConfigError

__all__ = ["Dataset", "Split", "list_datasets", "load_dataset"]

Loaded = tuple[Split, Split, tuple[str, ...], str]


def _cifar10(cfg: DataConfig) -> Loaded:
    from cnnkit.data import cifar

    return cifar.load(cfg.path, cfg.download)


def _digits(cfg: DataConfig) -> Loaded:
    from cnnkit.data import digits

    return digits.load()


def _synthetic(cfg: DataConfig) -> Loaded:
    from cnnkit.data import synthetic

    return synthetic.load()


_SOURCES: dict[str, Callable[[DataConfig], Loaded]] = {
    "cifar10": _cifar10,
    "digits": _digits,
    "synthetic": _synthetic,
}


def list_datasets() -> list[str]:
    return sorted(_SOURCES)


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """Read ``cfg.name`` and split it: subsets and validation split are stratified and seeded."""
    if cfg.name not in _SOURCES:
        raise ConfigError(
            f"unknown dataset data.name={cfg.name!r}{did_you_mean(cfg.name, _SOURCES)}"
        )
    train, test, class_names, source = _SOURCES[cfg.name](cfg)
    train = stratified_subset(train, cfg.train_subset, seed)
    test = stratified_subset(test, cfg.test_subset, seed)
    train, val = stratified_split(train, cfg.val_split, seed)
    return Dataset(cfg.name, class_names, train, val, test, source)
