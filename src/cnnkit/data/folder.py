"""Image folders: ``DIR/<class>/*.jpg|png|...``, or ``DIR/train``, ``DIR/val``, ``DIR/test`` each
laid out that way.

- Class names are the class folders' names, sorted, so that index i always means the same class
  (the run saves them; predict maps through them).
- Every image is decoded by :func:`cnnkit.data.images.load_image`, the function predict uses:
  EXIF rotation, any mode to RGB, resized to ``data.image_size``.
- A file that cannot be decoded, or that is not an image, is skipped and recorded with the
  reason; training goes on. Hidden files and folders are ignored. Symbolic links are followed
  while they stay inside DIR (a link that leaves it is skipped, a link loop is walked once).
  Images in nested folders belong to the class folder above them.
- Decoded images live in memory, or in a decoded copy in the user cache read a batch at a time
  (bounded memory; reused by later runs while the files are unchanged), or are decoded from the
  files for every batch (``data.cache``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
PART_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
MAX_AUTO_SIZE = 128  # the automatic image size is the median side, but no more than this
TEST_SEED = 0  # a missing test part is always drawn the same way, whatever the run's seed
CHANNELS = 3
_CHUNK = 256  # images decoded together


@dataclass
class FolderScan:
    """What is in DIR: for each part, (file, class folder name) in a stable order."""

    root: Path
    layout: str  # "classes" (DIR/<class>/) or "parts" (DIR/train/<class>/ ...)
    parts: dict[str, list[tuple[Path, str]]]
    class_folders: dict[str, list[str]]  # part -> its class folders (empty ones included)
    part_roots: dict[str, Path]  # part -> the folder holding its class folders
    skipped: list[tuple[str, str]] = field(default_factory=list)


def scan(root: str | Path) -> FolderScan:
    """Find the image files of ``root`` by part and class, without decoding them."""
    try:
        return _scan(root)
    except PermissionError as exc:
        raise DataError(f"cannot read {exc.filename}: permission denied") from None


def _scan(root: str | Path) -> FolderScan:
    top = Path(root).expanduser()
    if not top.is_dir():
        raise DataError(
            f"data.path={root} is not a folder; point it at a folder with one sub-folder per class"
        )
    real_root = top.resolve()
    skipped: list[tuple[str, str]] = []
    folders = _subfolders(top, real_root, skipped)
    named = {f.name.lower(): f for f in folders}
    part_folders = {PART_NAMES[n]: f for n, f in named.items() if n in PART_NAMES}
    if "train" in part_folders:
        others = [f.name for f in folders if f.name.lower() not in PART_NAMES]
        if others:
            raise DataError(
                f"{top} holds train/ beside other folders ({', '.join(sorted(others)[:5])}); "
                f"use either DIR/train, DIR/val, DIR/test or one folder per class, not both"
            )
        layout, tops = "parts", part_folders
    elif (
        part_folders
        and not (set(part_folders) - {"test", "val"})
        and len(folders) == len(part_folders)
    ):
        raise DataError(f"{top} has {'/'.join(sorted(part_folders))}/ but no train/ folder")
    else:
        layout, tops = "classes", {"train": top}
    parts: dict[str, list[tuple[Path, str]]] = {}
    class_folders: dict[str, list[str]] = {}
    found_classes = {part: _subfolders(t, real_root, skipped) for part, t in tops.items()}
    # Each real folder is walked once, and a link into the data folder's own top, a part or a
    # class folder is not followed: images belong to the class folder they are really in.
    tops_real = {os.path.realpath(f) for fs in found_classes.values() for f in fs}
    visited: set[str] = {str(real_root), *(os.path.realpath(t) for t in tops.values())}
    for part, part_top in tops.items():
        classes = found_classes[part]
        for stray in sorted(part_top.iterdir()):
            if stray.is_file() and not stray.name.startswith("."):
                skipped.append((str(stray), "not inside a class folder"))
        files: list[tuple[Path, str]] = []
        for folder in classes:
            others = tops_real - {os.path.realpath(folder)}
            walk = _walk(folder, real_root, visited | others, skipped, others)
            files.extend((f, folder.name) for f in walk)
        parts[part] = files
        class_folders[part] = [f.name for f in classes]
    if not class_folders["train"]:
        raise DataError(
            f"{tops['train']} has no class folders: put each class's images in "
            f"{tops['train']}/<class name>/"
        )
    return FolderScan(top, layout, parts, class_folders, dict(tops), skipped)


def _inside(path: str, real_root: Path) -> bool:
    return Path(path).is_relative_to(real_root)


def _subfolders(folder: Path, real_root: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not _inside(os.path.realpath(entry), real_root):
            skipped.append((str(entry), "symbolic link to a folder outside the data folder"))
            continue
        found.append(entry)
    return found


def _walk(
    folder: Path,
    real_root: Path,
    visited: set[str],
    skipped: list[tuple[str, str]],
    other_classes: set[str],
) -> Iterator[Path]:
    seen_files: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if not _inside(real, real_root):
            skipped.append((dirpath, "symbolic link to a folder outside the data folder"))
            dirnames[:] = []
            continue
        if real in visited:  # a link loop, or a link to a folder scanned on its own
            skipped.append((dirpath, "symbolic link to a folder already scanned"))
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            real_file = os.path.realpath(path)
            if not _inside(real_file, real_root):
                skipped.append((str(path), "symbolic link to a file outside the data folder"))
            elif any(_inside(real_file, Path(other)) for other in other_classes):
                # Its label would be this folder's, though the image is another class's.
                skipped.append((str(path), "symbolic link into another class folder"))
            elif not path.is_file():
                skipped.append((str(path), "broken symbolic link"))
            elif os.path.realpath(path) in seen_files:
                skipped.append((str(path), "symbolic link to a file already listed"))
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                kind = path.suffix or "no extension"
                skipped.append((str(path), f"not an image file ({kind})"))
            else:
                seen_files.add(os.path.realpath(path))
                yield path


def auto_size(files: Sequence[Path], sample: int = 2000) -> int:
    """The median side of (a sample of) the images, at most MAX_AUTO_SIZE."""
    from PIL import Image

    sides: list[int] = []
    step = max(1, len(files) // sample)
    for path in files[::step]:
        try:
            with Image.open(path) as image:
                sides.extend(image.size)
        except Exception:  # a broken file is reported when it is decoded
            continue
    if not sides:
        return 32
    return int(min(MAX_AUTO_SIZE, max(8, round(float(np.median(sides))))))


# ------------------------------------------------------------------------------ decoded images


class FileImages:
    """Images decoded from their files whenever they are read (no cache at all)."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths: Sequence[str], size: int) -> None:
        self.paths = np.asarray(paths, dtype=object)
        self.size = size
        self.shape = (len(self.paths), size, size, CHANNELS)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: Any) -> np.ndarray:
        positions, single = _positions(len(self), index)
        out = np.empty((len(positions), self.size, self.size, CHANNELS), np.uint8)

        def one(i: int) -> None:
            out[i] = load_image(self.paths[positions[i]], (self.size, self.size), CHANNELS)

        _parallel(one, len(positions))
        return out[0] if single else out

    def take(self, index: np.ndarray) -> FileImages:
        return FileImages(list(self.paths[index]), self.size)


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
    files: Sequence[Path], size: int, sink: Callable[[np.ndarray], None]
) -> tuple[list[int], list[tuple[str, str]]]:
    """Decode ``files`` in chunks, passing each chunk's good images to ``sink`` in order.

    Returns the positions of the good files and (file, reason) for the others.
    """
    good: list[int] = []
    bad: list[tuple[str, str]] = []
    for start in range(0, len(files), _CHUNK):
        chunk = files[start : start + _CHUNK]
        out, errors = _decode_chunk(chunk, size)
        ok = np.array([e is None for e in errors], bool)
        for i, error in enumerate(errors):
            if error is None:
                good.append(start + i)
            else:
                bad.append((str(chunk[i]), error))
        sink(out[ok])
    return good, bad


def _decode_chunk(chunk: Sequence[Path], size: int) -> tuple[np.ndarray, list[str | None]]:
    out = np.empty((len(chunk), size, size, CHANNELS), np.uint8)
    errors: list[str | None] = [None] * len(chunk)

    def one(i: int) -> None:
        try:
            out[i] = load_image(chunk[i], (size, size), CHANNELS)
        except ImageError as exc:
            errors[i] = str(exc).removeprefix(f"{chunk[i]}: ")

    _parallel(one, len(chunk))
    return out, errors


def _cache_key(files: Sequence[Path], size: int) -> str:
    digest = hashlib.sha256(f"cnnkit-folder-v2 {size}\n".encode())
    for f in files:
        stat = f.stat()
        digest.update(f"{f.resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def decoded_on_disk(files: Sequence[Path], size: int) -> tuple[DiskImages, list[int], list[Any]]:
    """A decoded copy of ``files`` in the user cache (made once; reused while files are unchanged)."""
    folder = cache_dir() / "folders" / _cache_key(files, size)
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
            good, bad = decode(files, size, lambda rows: out.write(rows.tobytes()))
        (tmp / "index.json").write_text(json.dumps({"good": good, "bad": bad}))
    return DiskImages(folder / "images.u8", np.arange(len(good)), size), good, bad


def decoded_in_memory(files: Sequence[Path], size: int) -> tuple[np.ndarray, list[int], list[Any]]:
    x = np.empty((len(files), size, size, CHANNELS), np.uint8)
    filled = 0

    def sink(rows: np.ndarray) -> None:
        nonlocal filled
        x[filled : filled + len(rows)] = rows
        filled += len(rows)

    good, bad = decode(files, size, sink)
    return x[:filled], good, bad


# ------------------------------------------------------------------------------ the loader


def load(cfg: DataConfig) -> Source:
    """Read ``cfg.path`` as an image folder (see the module's docstring)."""
    if not cfg.path:
        raise DataError("data.name=folder needs data.path=DIR, the folder of class folders")
    found = scan(cfg.path)
    size = cfg.image_size or auto_size([f for f, _ in found.parts["train"]])
    total = sum(len(files) for files in found.parts.values())
    if total == 0:
        raise DataError(
            f"{found.root} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
            f"{len(found.skipped)} other files were skipped"
        )
    mode = cfg.cache
    if mode == "auto":
        mode = "memory" if total * size * size * CHANNELS <= cfg.cache_mb * 1e6 else "disk"
    if mode == "memory":
        from cnnkit.resources import require_data_memory

        require_data_memory(total, (size, size, CHANNELS), f"{found.root} with data.cache=memory")
    notice(f"{found.root}: decoding {total} images to {size}x{size} RGB (data.cache={mode})")
    skipped = list(found.skipped)
    decoded: dict[str, tuple[np.ndarray | ImageArray, list[str]]] = {}
    for part, entries in found.parts.items():
        files = [f for f, _ in entries]
        x: np.ndarray | ImageArray
        if mode == "memory":
            x, good, bad = decoded_in_memory(files, size)
        elif mode == "disk":
            x, good, bad = decoded_on_disk(files, size)
        else:  # none: decoded once here to find the broken files, then again for every batch
            good, bad = decode(files, size, lambda rows: None)
            x = FileImages([str(files[i]) for i in good], size)
        skipped.extend(bad)
        decoded[part] = (x, [entries[i][1] for i in good])
    # Classes: the training part's class folders that hold at least one readable image.
    train_labels = decoded["train"][1]
    classes = tuple(sorted(set(train_labels)))
    for name in found.class_folders["train"]:
        if name not in classes:
            skipped.append(
                (str(found.part_roots["train"] / name), "no readable images; class left out")
            )
    if len(classes) < 2:
        raise DataError(
            f"{found.root} has {len(classes)} class with readable images; a classifier needs "
            f"at least two class folders with images"
        )
    index = {c: i for i, c in enumerate(classes)}
    splits: dict[str, Split] = {}
    for part, (x, labels) in decoded.items():
        for label in sorted(set(labels) - set(classes)):
            skipped.append(
                (str(found.part_roots[part] / label), "class not in the training part; left out")
            )
        keep = np.array([label in index for label in labels], bool)
        y = np.array([index[lab] for lab in labels if lab in index], np.int64)
        splits[part] = Split(take(x, np.flatnonzero(keep)), y)
    train, test = splits["train"], splits.get("test")
    if test is None or len(test) == 0:
        train, test = stratified_split(train, cfg.test_split, TEST_SEED, purpose="the test set")
        assert test is not None
    val = splits.get("val")
    notes = {"layout": found.layout, "image_size": size, "cache": mode}
    return Source(
        train, test, classes, str(found.root), val if val else None, tuple(skipped), notes
    )
