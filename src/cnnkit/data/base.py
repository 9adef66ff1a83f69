"""The in-memory dataset every source produces, and the seeded, stratified splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnkit.errors import DataError


@dataclass(frozen=True)
class Split:
    """Images as uint8 ``(N, H, W, C)`` and integer labels ``(N,)``."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.dtype != np.uint8 or self.x.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, H, W, C), got {self.x.dtype} {self.x.shape}"
            )
        if self.y.shape != (len(self.x),):
            raise ValueError(f"labels must be ({len(self.x)},), got {self.y.shape}")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset split three ways; ``val`` is None when no validation split is asked for."""

    name: str
    class_names: tuple[str, ...]
    train: Split
    val: Split | None
    test: Split
    source: str  # where the images were read from, for the run record

    @property
    def input_shape(self) -> tuple[int, int, int]:
        h, w, c = self.train.x.shape[1:]
        return int(h), int(w), int(c)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "source": self.source,
            "classes": list(self.class_names),
            "input_shape": list(self.input_shape),
            "train": len(self.train),
            "val": len(self.val) if self.val is not None else 0,
            "test": len(self.test),
        }


def stratified_subset(split: Split, size: int, seed: int) -> Split:
    """A stratified sample of ``size`` images (the whole split when size is 0 or too large)."""
    if size <= 0 or size >= len(split):
        return split
    classes = len(np.unique(split.y))
    if size < classes:
        raise DataError(
            f"a subset of {size} images cannot hold all {classes} classes; ask for more"
        )
    from sklearn.model_selection import train_test_split

    index, _ = train_test_split(
        np.arange(len(split)), train_size=size, stratify=split.y, random_state=seed
    )
    index = np.sort(index)
    return Split(split.x[index], split.y[index])


def stratified_split(split: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Hold out ``fraction`` of ``split``, stratified by label: returns (rest, held_out)."""
    if fraction <= 0:
        return split, None
    from sklearn.model_selection import train_test_split

    try:
        keep, held = train_test_split(
            np.arange(len(split)), test_size=fraction, stratify=split.y, random_state=seed
        )
    except ValueError as exc:  # too few images per class for the fraction asked
        raise DataError(f"cannot hold out {fraction:.0%} for validation: {exc}") from None
    keep, held = np.sort(keep), np.sort(held)
    return Split(split.x[keep], split.y[keep]), Split(split.x[held], split.y[held])
