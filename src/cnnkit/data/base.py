"""The dataset every source produces, and the seeded, stratified splits.

Images are uint8 ``(N, H, W, C)``: a numpy array when they fit in memory, or an
:class:`ImageArray` that reads them from disk a batch at a time (large image folders).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cnnkit.errors import DataError


@runtime_checkable
class ImageArray(Protocol):
    """Images on disk that index like a uint8 numpy array: ``x[index]`` reads them into memory,
    ``x.take(index)`` is a lazy selection (nothing read)."""

    shape: tuple[int, int, int, int]
    dtype: np.dtype[Any]
    ndim: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> np.ndarray: ...

    def take(self, index: np.ndarray) -> ImageArray: ...


def take(x: np.ndarray | ImageArray, index: np.ndarray) -> np.ndarray | ImageArray:
    """``x[index]``, without reading images from disk when ``x`` is an ImageArray."""
    return x[index] if isinstance(x, np.ndarray) else x.take(index)


@dataclass(frozen=True)
class Split:
    """Images as uint8 ``(N, H, W, C)`` (in memory or on disk) and integer labels ``(N,)``;
    ``files``: where each image came from (its file, or a name such as ``train[12]`` for a
    Hugging Face dataset), for sources that have files; None for arrays such as CIFAR-10."""

    x: np.ndarray | ImageArray
    y: np.ndarray
    files: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.x.dtype != np.uint8 or self.x.ndim != 4:
            raise ValueError(
                f"images must be uint8 (N, H, W, C), got {self.x.dtype} {self.x.shape}"
            )
        if self.y.shape != (len(self.x),):
            raise ValueError(f"labels must be ({len(self.x)},), got {self.y.shape}")
        if self.files is not None and self.files.shape != self.y.shape:
            raise ValueError(f"files must be ({len(self.x)},), got {self.files.shape}")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.x, np.ndarray)

    def take(self, index: np.ndarray) -> Split:
        files = None if self.files is None else self.files[index]
        return Split(take(self.x, index), self.y[index], files)


@dataclass(frozen=True)
class Source:
    """What a dataset module reads: its own train and test parts (and validation, when the source
    has one), before cnnkit's subsets and splits. ``skipped``: (file, reason) for every file
    that was left out."""

    train: Split
    test: Split
    class_names: tuple[str, ...]
    location: str
    val: Split | None = None
    skipped: tuple[tuple[str, str], ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset split three ways (four with a calibration split); ``val`` is None when
    no validation split is asked for."""

    name: str
    class_names: tuple[str, ...]
    train: Split
    val: Split | None
    test: Split
    source: str  # where the images were read from, for the run record
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason) of files left out
    notes: dict[str, Any] = field(default_factory=dict)  # source-specific facts for the record
    # Training images held out to calibrate on where there is no validation split.
    held_out: Split | None = None

    @property
    def calibration(self) -> Split | None:
        """The held-out images to calibrate the probabilities on: the validation split, or
        else the calibration split (None: neither)."""
        return self.val if self.val is not None else self.held_out

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
            **({"calibration": len(self.held_out)} if self.held_out is not None else {}),
            "test": len(self.test),
            "skipped_files": len(self.skipped),
            **self.notes,
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
    if len(split) - size < classes:
        # sklearn stratifies only when both parts hold every class; leaving out fewer images
        # than there are classes changes no class's share noticeably, so drop them at random
        dropped = np.random.default_rng(seed).choice(len(split), len(split) - size, replace=False)
        return split.take(np.setdiff1d(np.arange(len(split)), dropped))
    from sklearn.model_selection import train_test_split

    index, _ = train_test_split(
        np.arange(len(split)), train_size=size, stratify=split.y, random_state=seed
    )
    return split.take(np.sort(index))


def stratified_split(
    split: Split, fraction: float | int, seed: int, purpose: str = "validation"
) -> tuple[Split, Split | None]:
    """Hold out ``fraction`` of ``split`` (an int: that many images), stratified by label:
    returns (rest, held_out)."""
    if fraction <= 0:
        return split, None
    from sklearn.model_selection import train_test_split

    # A class with a single image cannot be in both parts: it stays in the rest (sources warn
    # about such labels), and the others are split stratified.
    lone = np.bincount(split.y)[split.y] < 2
    candidates = np.flatnonzero(~lone)
    try:
        keep, held = train_test_split(
            candidates, test_size=fraction, stratify=split.y[candidates], random_state=seed
        )
        keep = np.concatenate([keep, np.flatnonzero(lone)])
    except ValueError as exc:  # too few images per class for the fraction asked
        share = f"{fraction} images" if isinstance(fraction, int) else f"{fraction:.0%}"
        raise DataError(f"cannot hold out {share} for {purpose}: {exc}") from None
    return split.take(np.sort(keep)), split.take(np.sort(held))
