"""Labelled image files decoded the same way for every source that lists them (folders, label
tables, Hugging Face datasets): :func:`labelled_source` turns ``(item, label)`` lists into a
:class:`~cnnkit.data.base.Source`.

- Every image is decoded by a *reader* (by default :func:`cnnkit.data.images.load_image`, the
  function predict uses): EXIF rotation, any mode to RGB, resized to ``data.image_size``.
- An item that cannot be decoded is skipped and recorded with the reason; training goes on.
- Class names are the labels, sorted, so that index i always means the same class (the run saves
  them; predict maps through them). A label whose images are all unreadable is left out, and so is
  a label of the validation or test part that the training part lacks.
- Decoded images live in memory, or in a decoded copy in the user cache read a batch at a time
  (bounded memory; reused by later runs while the files are unchanged), or are decoded for every
  batch (``data.cache``).
- Each split keeps its items' names (:attr:`~cnnkit.data.base.Split.files`), so that a run can
  say which files it was trained and tested on, and which it got wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.atomic import atomic_path
from cnnkit.config import DataConfig
from cnnkit.data.base import ImageArray, Source, Split, stratified_split, take
from cnnkit.data.download import cache_dir
from cnnkit.data.images import load_image
from cnnkit.errors import DataError, ImageError
from cnnkit.log import notice

TEST_SEED = 0  # a missing test part is always drawn the same way, whatever the run's seed
CHANNELS = 3
_CHUNK = 256  # images decoded together

# (item, (height, width), channels) -> uint8 (height, width, channels); raises ImageError.
Reader = Callable[[Any, tuple[int, int], int], np.ndarray]


class FileImages:
    """Images decoded from their items whenever they are read (no cache at all)."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, items: Sequence[Any], size: int, reader: Reader = load_image) -> None:
        self.paths = np.empty(len(items), dtype=object)
        self.paths[:] = list(items)
        self.size = size
        self.reader = reader
        self.shape = (len(self.paths), size, size, CHANNELS)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: Any) -> np.ndarray:
        positions, single = _positions(len(self), index)
        out = np.empty((len(positions), self.size, self.size, CHANNELS), np.uint8)

        def one(i: int) -> None:
            out[i] = self.reader(self.paths[positions[i]], (self.size, self.size), CHANNELS)

        _parallel(one, len(positions))
        return out[0] if single else out

    def take(self, index: np.ndarray) -> FileImages:
        return FileImages(list(self.paths[index]), self.size, self.reader)


class DiskImages:
    """Decoded images in a flat uint8 file (row i at i * H * W * C), read by position."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, file: Path, rows: np.ndarray, size: int) -> None:
        self.file = file
        self.rows = np.asarray(rows, dtype=np.int64)
        self.size = size
        self.shape = (len(self.rows), size, size, CHANNELS)
        self._row_bytes = size * size * CHANNELS

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> np.ndarray:
        positions, single = _positions(len(self), index)
        out = np.empty((len(positions), self.size, self.size, CHANNELS), np.uint8)
        fd = os.open(self.file, os.O_RDONLY)
        try:
            for i, row in enumerate(self.rows[positions]):
                got = os.preadv(fd, [memoryview(out[i]).cast("B")], int(row) * self._row_bytes)
                if got != self._row_bytes:
                    raise DataError(f"the decoded-image cache {self.file} is truncated; delete it")
        finally:
            os.close(fd)
        return out[0] if single else out

    def take(self, index: np.ndarray) -> DiskImages:
        return DiskImages(self.file, self.rows[index], self.size)


def _positions(n: int, index: Any) -> tuple[np.ndarray, bool]:
    if isinstance(index, int | np.integer):
        return np.array([int(index) % n]), True
    if isinstance(index, slice):
        return np.arange(n)[index], False
    index = np.asarray(index)
    if index.dtype == bool:
        return np.flatnonzero(index), False
    return index.astype(np.int64) % max(n, 1), False


def _parallel(work: Callable[[int], None], n: int) -> None:
    if n < 16:
        for i in range(n):
            work(i)
        return
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(work, range(n)))


def decode(
    items: Sequence[Any],
    size: int,
    sink: Callable[[np.ndarray], None],
    reader: Reader = load_image,
) -> tuple[list[int], list[tuple[str, str]]]:
    """Decode ``items`` in chunks, passing each chunk's good images to ``sink`` in order.

    Returns the positions of the good items and (item, reason) for the others.
    """
    good: list[int] = []
    bad: list[tuple[str, str]] = []
    for start in range(0, len(items), _CHUNK):
        chunk = items[start : start + _CHUNK]
        out, errors = _decode_chunk(chunk, size, reader)
        ok = np.array([e is None for e in errors], bool)
        for i, error in enumerate(errors):
            if error is None:
                good.append(start + i)
            else:
                bad.append((str(chunk[i]), error))
        sink(out[ok])
    return good, bad


def _decode_chunk(
    chunk: Sequence[Any], size: int, reader: Reader
) -> tuple[np.ndarray, list[str | None]]:
    out = np.empty((len(chunk), size, size, CHANNELS), np.uint8)
    errors: list[str | None] = [None] * len(chunk)

    def one(i: int) -> None:
        try:
            out[i] = reader(chunk[i], (size, size), CHANNELS)
        except ImageError as exc:
            errors[i] = str(exc).removeprefix(f"{chunk[i]}: ")

    _parallel(one, len(chunk))
    return out, errors


def files_key(files: Sequence[Path], size: int) -> str:
    """The decoded-image cache's key for image files: their real paths, sizes and times."""
    digest = hashlib.sha256(f"cnnkit-folder-v2 {size}\n".encode())
    for f in files:
        stat = f.stat()
        digest.update(f"{f.resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def decoded_on_disk(
    items: Sequence[Any], size: int, key: str | None = None, reader: Reader = load_image
) -> tuple[DiskImages, list[int], list[Any]]:
    """A decoded copy of ``items`` in the user cache, made once and reused while ``key`` (by
    default :func:`files_key` of the items, which are then files) stays the same."""
    folder = cache_dir() / "folders" / (key or files_key(items, size))
    index = folder / "index.json"
    if index.is_file():
        try:
            record = json.loads(index.read_text())
            good, bad = list(record["good"]), [tuple(b) for b in record["bad"]]
            images = DiskImages(folder / "images.u8", np.arange(len(good)), size)
            if (folder / "images.u8").stat().st_size == len(good) * size * size * CHANNELS:
                return images, good, bad
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged cache entry is made again
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder) as tmp:  # another process may be making the same entry
        tmp.mkdir()
        with (tmp / "images.u8").open("wb") as out:
            good, bad = decode(items, size, lambda rows: out.write(rows.tobytes()), reader)
        (tmp / "index.json").write_text(json.dumps({"good": good, "bad": bad}))
    return DiskImages(folder / "images.u8", np.arange(len(good)), size), good, bad


def decoded_in_memory(
    items: Sequence[Any], size: int, reader: Reader = load_image
) -> tuple[np.ndarray, list[int], list[Any]]:
    x = np.empty((len(items), size, size, CHANNELS), np.uint8)
    filled = 0

    def sink(rows: np.ndarray) -> None:
        nonlocal filled
        x[filled : filled + len(rows)] = rows
        filled += len(rows)

    good, bad = decode(items, size, sink, reader)
    return x[:filled], good, bad


def cache_mode(cfg: DataConfig, count: int, size: int, where: str) -> str:
    """``data.cache`` resolved for ``count`` images of ``size``: auto is memory while they fit
    in ``data.cache_mb``; memory is refused when the machine lacks it."""
    mode = cfg.cache
    if mode == "auto":
        mode = "memory" if count * size * size * CHANNELS <= cfg.cache_mb * 1e6 else "disk"
    if mode == "memory":
        from cnnkit.resources import require_data_memory

        require_data_memory(count, (size, size, CHANNELS), f"{where} with data.cache=memory")
    return mode


def labelled_source(
    parts: dict[str, list[tuple[Any, str]]],
    cfg: DataConfig,
    size: int,
    location: str,
    skipped: list[tuple[str, str]],
    notes: dict[str, Any],
    *,
    expected: Sequence[str] = (),
    where: Callable[[str, str], str] = lambda part, label: f"label {label!r} of {part}",
    reader: Reader = load_image,
    key: Callable[[str], str] | None = None,
    names: Callable[[Any], str] = str,
    what: str = "classes",
    order: Sequence[str] = (),
) -> Source:
    """Decode each part's ``(item, label)`` list (parts: ``train``, and ``val``/``test`` where the
    source has them) into a Source; see the module's docstring.

    ``expected``: labels known to exist (a folder's empty class folders), reported when they end
    with no readable image. ``where(part, label)`` names a label's place in messages. ``key(part)``:
    the decoded-image cache's key of a part whose items are not files. ``names(item)``: the name
    recorded for the item (:attr:`Split.files`). ``what``: the classes' name in messages. ``order``: the
    classes' order where the source has one (a Hugging Face ``ClassLabel``), else sorted.
    """
    total = sum(len(entries) for entries in parts.values())
    mode = cache_mode(cfg, total, size, location)
    notice(f"{location}: decoding {total} images to {size}x{size} RGB (data.cache={mode})")
    decoded: dict[str, tuple[np.ndarray | ImageArray, list[str], np.ndarray]] = {}
    for part, entries in parts.items():
        items = [item for item, _ in entries]
        x: np.ndarray | ImageArray
        if mode == "memory":
            x, good, bad = decoded_in_memory(items, size, reader)
        elif mode == "disk":
            x, good, bad = decoded_on_disk(items, size, key(part) if key else None, reader)
        else:  # none: decoded once here to find the broken items, then again for every batch
            good, bad = decode(items, size, lambda rows: None, reader)
            x = FileImages([items[i] for i in good], size, reader)
        skipped.extend(bad)
        files = np.empty(len(good), dtype=object)
        files[:] = [names(items[i]) for i in good]
        decoded[part] = (x, [entries[i][1] for i in good], files)
    # Classes: the training part's labels that have at least one readable image.
    readable = set(decoded["train"][1])
    classes = tuple(c for c in order if c in readable) if order else tuple(sorted(readable))
    for label in sorted({*expected, *(lab for _, lab in parts["train"])} - set(classes)):
        skipped.append((where("train", label), "no readable images; class left out"))
    if len(classes) < 2:
        raise DataError(
            f"{location} has {len(classes)} class with readable images; a classifier needs at "
            f"least two {what} with images"
        )
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, Split] = {}
    for part, (x, labels, files) in decoded.items():
        for label in sorted(set(labels) - set(classes)):
            skipped.append((where(part, label), "class not in the training part; left out"))
        keep = np.flatnonzero([label in index for label in labels])
        y = np.array([index[labels[i]] for i in keep], np.int64)
        splits[part] = Split(take(x, keep), y, files[keep])
    train, test = splits["train"], splits.get("test")
    if test is None or len(test) == 0:
        train, test = stratified_split(train, cfg.test_split, TEST_SEED, purpose="the test set")
        assert test is not None
    val = splits.get("val")
    notes = {**notes, "image_size": size, "cache": mode}
    return Source(train, test, classes, location, val if val else None, tuple(skipped), notes)
