"""Image folders: ``DIR/<class>/*.jpg|png|...``, or ``DIR/train``, ``DIR/val``, ``DIR/test`` each
laid out that way.

- Class names are the class folders' names; the images are decoded, cached and split by
  :func:`cnnkit.data.decoded.labelled_source`, as for every source that lists image files.
- A file that is not an image is skipped and recorded with the reason, as is one that cannot
  be decoded; training goes on. Hidden files and folders are ignored. Symbolic links are followed
  while they stay inside DIR (a link that leaves it is skipped, a link loop is walked once).
  Images in nested folders belong to the class folder above them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnkit.config import DataConfig
from cnnkit.data.base import Source
from cnnkit.data.decoded import labelled_source
from cnnkit.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
PART_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
MAX_AUTO_SIZE = 128  # the automatic image size is the median side, but no more than this


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
    return labelled_source(
        dict(found.parts.items()),
        cfg,
        size,
        str(found.root),
        list(found.skipped),
        {"layout": found.layout},
        expected=found.class_folders["train"],
        where=lambda part, label: str(found.part_roots[part] / label),
        what="class folders",
    )
