"""Hugging Face datasets on disk: the folder ``Dataset.save_to_disk`` (or
``DatasetDict.save_to_disk``) wrote, or a folder of Parquet files as the Hub keeps them
(``train-*.parquet``, ``data/test-*.parquet``, ...). Never a download.

- The dataset's own splits are used: ``train``, ``validation`` (or ``val``, ``valid``) and
  ``test``; other splits are left out and said so. A dataset without a ``train`` split is
  refused.
- The images are the first ``Image`` feature; the labels the ``ClassLabel`` feature
  (``data.label_column`` names another, such as a string column), with the dataset's own class
  names in the dataset's own order.
- The images are read a row at a time from the dataset's memory-mapped Arrow files and decoded
  like every file cnnkit reads (:func:`cnnkit.data.images.decode_bytes`), then cached and split
  as for folders (:func:`cnnkit.data.decoded.labelled_source`). Each image is named by its file
  name where the dataset kept one, else ``split[row]``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.config import DataConfig
from cnnkit.data.base import Source
from cnnkit.data.decoded import labelled_source
from cnnkit.errors import DataError, ImageError

SPLITS = {"train": "train", "validation": "val", "val": "val", "valid": "val", "test": "test"}
MAX_AUTO_SIZE = 128
_SAMPLE = 200  # images measured for the automatic size


@dataclass(frozen=True)
class _Row:
    split: str
    index: int

    def __str__(self) -> str:
        return f"{self.split}[{self.index}]"


def load(cfg: DataConfig) -> Source:
    """Read the dataset saved at ``cfg.path`` (see the module's docstring)."""
    from cnnkit import env

    if not cfg.path:
        raise DataError("data.name=hf needs data.path=DIR, a folder save_to_disk wrote")
    env.require("datasets", "data.name=hf", "hf")
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.path={cfg.path} is not a folder; give the folder save_to_disk wrote")
    found = _open(datasets, folder)
    named = {SPLITS[s]: s for s in found if s in SPLITS}
    if "train" not in named:
        raise DataError(
            f"{folder} has no train split (it has {', '.join(sorted(found)) or 'none'}); "
            f"save the training images as the 'train' split"
        )
    train = found[named["train"]]
    image_col = _image_column(datasets, train.features, folder)
    label_col, names = _label_column(datasets, train.features, cfg.label_column, folder)
    tables: dict[str, Any] = {}
    parts: dict[str, list[tuple[Any, str]]] = {}
    for part, split in named.items():
        ds = found[split]
        for column in (image_col, label_col):
            if column not in ds.features:
                raise DataError(f"{folder}'s split {split!r} has no column {column!r}")
        tables[split] = ds.cast_column(image_col, datasets.Image(decode=False))
        labels = ds[label_col]
        parts[part] = [
            (_Row(split, i), names[v] if names else str(v))
            for i, v in enumerate(labels)
            if v is not None and v != -1  # -1: ClassLabel's "no label" (unlabelled test sets)
        ]

    def read(row: _Row, size: tuple[int, int], channels: int) -> np.ndarray:
        from cnnkit.data.images import decode_bytes, load_image, max_pixels

        cell = tables[row.split][row.index][image_col]
        if cell is None:
            raise ImageError(f"{row}: no image")
        if cell.get("bytes"):
            return decode_bytes(cell["bytes"], size, channels, max_pixels(), str(row))
        if cell.get("path"):
            return load_image(cell["path"], size, channels)
        raise ImageError(f"{row}: no image")

    def name(row: _Row) -> str:
        path = tables[row.split][row.index][image_col] or {}
        return f"{row} {Path(path['path']).name}" if path.get("path") else str(row)

    def key(part: str) -> str:
        fingerprint = getattr(found[named[part]], "_fingerprint", "") or str(folder.resolve())
        return hashlib.sha256(f"cnnkit-hf-v1 {fingerprint} {size}".encode()).hexdigest()[:24]

    size = cfg.image_size or _auto_size(tables, image_col, parts["train"])
    left_out = sorted(set(found) - set(named.values()))
    notes: dict[str, Any] = {"hf_splits": {part: split for part, split in named.items()}}
    if left_out:
        notes["hf_splits_left_out"] = left_out
    return labelled_source(
        parts, cfg, size, str(folder), [], notes,
        where=lambda part, label: f"{folder} {named.get(part, part)} label {label!r}",
        reader=read, key=key, names=name, order=names or (),
    )  # fmt: skip


def _open(datasets: Any, folder: Path) -> dict[str, Any]:
    """The dataset's splits by name."""
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        try:
            loaded = datasets.load_from_disk(str(folder))
        except Exception as exc:  # the library's errors for a damaged folder are many
            raise DataError(f"{folder} is not a readable saved dataset ({exc})") from None
    elif any(folder.rglob("*.parquet")):
        try:
            from cnnkit.data.download import cache_dir

            loaded = datasets.load_dataset(
                "parquet", data_dir=str(folder), cache_dir=str(cache_dir() / "hf")
            )
        except Exception as exc:
            raise DataError(f"{folder}'s Parquet files are not a dataset ({exc})") from None
    else:
        raise DataError(
            f"{folder} is not a saved Hugging Face dataset (no dataset_dict.json, state.json or "
            f".parquet files); write it with Dataset.save_to_disk"
        )
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded.items())


def _image_column(datasets: Any, features: Any, folder: Path) -> str:
    for column, feature in features.items():
        if isinstance(feature, datasets.Image):
            return str(column)
    raise DataError(
        f"{folder} has no Image feature (its columns: {', '.join(features)}); cast the image "
        f"column with dataset.cast_column(COLUMN, datasets.Image())"
    )


def _label_column(
    datasets: Any, features: Any, chosen: str, folder: Path
) -> tuple[str, list[str] | None]:
    """The label column, and its class names when it is a ClassLabel."""
    if chosen:
        if chosen not in features:
            raise DataError(
                f"{folder} has no column {chosen!r} (it has {', '.join(features)}); "
                f"set data.label_column to the label feature"
            )
        feature = features[chosen]
    else:
        labels = [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)]
        sequences = [c for c, f in features.items() if _is_label_sequence(datasets, f)]
        if not labels:
            several = f" ({sequences[0]} holds several labels per image)" if sequences else ""
            raise DataError(
                f"{folder} has no ClassLabel feature{several}; name the label column with "
                f"data.label_column=COLUMN"
            )
        chosen, feature = labels[0], features[labels[0]]
    if isinstance(feature, datasets.ClassLabel):
        return chosen, list(feature.names)
    if _is_label_sequence(datasets, feature):
        raise DataError(
            f"{folder}'s column {chosen!r} holds several labels per image; cnnkit trains one "
            f"label per image for now"
        )
    return chosen, None


def _is_label_sequence(datasets: Any, feature: Any) -> bool:
    inner = getattr(feature, "feature", None)
    if isinstance(feature, list) and feature:
        inner = feature[0]
    return isinstance(inner, datasets.ClassLabel)


def _auto_size(tables: dict[str, Any], column: str, train: list[tuple[Any, str]]) -> int:
    """The median side of a sample of the training images (as folders do), at most 128; only
    the images' headers are read."""
    import io

    from PIL import Image

    sides: list[int] = []
    step = max(1, len(train) // _SAMPLE)
    for row, _ in train[::step]:
        cell = tables[row.split][row.index][column] or {}
        try:
            source = io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell["path"]
            with Image.open(source) as opened:
                sides.extend(opened.size)
        except Exception:  # a broken image is reported when it is decoded
            continue
    if not sides:
        return 32
    return int(min(MAX_AUTO_SIZE, max(8, round(float(np.median(sides))))))
