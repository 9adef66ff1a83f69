"""What is in an image folder, before training on it (``cnnkit data inspect``): numbers in
:func:`inspect_folder`, the sample grid in :func:`draw_samples`.

Every file is opened and fully decoded (a truncated JPEG only fails when decoded), and hashed,
so that byte-identical copies across the train, val and test parts are found: such copies make a
test score look better than the model is.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.folder import scan


@dataclass
class FileFacts:
    path: str
    part: str
    label: str
    md5: str
    width: int = 0
    height: int = 0
    format: str = ""
    mode: str = ""
    error: str = ""


@dataclass
class FolderReport:
    root: str
    layout: str
    classes: list[str]
    counts: dict[str, dict[str, int]]  # part -> class -> readable images
    imbalance: float  # largest / smallest class in train (inf when a class has none)
    sizes: dict[str, float]  # min, median and max of widths and heights
    formats: dict[str, int]
    modes: dict[str, int]
    unreadable: list[tuple[str, str]]
    skipped: list[tuple[str, str]]  # not images, links leaving the folder, ...
    duplicates_across_parts: list[list[str]]  # groups of byte-identical files in several parts
    duplicates_within_parts: int  # extra copies inside one part
    files: list[FileFacts] = field(default_factory=list, repr=False)
    grid: Path | None = None  # the sample grid, where one was drawn

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        del values["files"]
        values["grid"] = None if self.grid is None else str(self.grid)
        if not np.isfinite(self.imbalance):
            values["imbalance"] = None
        return values


def _facts(path: Path, part: str, label: str) -> FileFacts:
    from PIL import Image

    data = path.read_bytes()
    facts = FileFacts(str(path), part, label, hashlib.md5(data, usedforsecurity=False).hexdigest())
    try:
        with Image.open(path) as image:
            facts.width, facts.height = image.size
            facts.format, facts.mode = image.format or "", image.mode
            image.load()
    except Exception as exc:  # any decoding failure is a fact to report, not a crash
        facts.error = f"{type(exc).__name__}: {exc}"[:200]
    return facts


def inspect_folder(
    root: str | Path, grid: str | Path | None = None, per_class: int = 8
) -> FolderReport:
    """What training would see in the image folder ``root`` (``cnnkit data inspect``): classes,
    counts, sizes, formats, unreadable files, duplicates across parts. With ``grid``, also draw
    ``per_class`` sample images of each class there (a PNG; an existing file is never replaced).
    """
    from cnnkit.errors import CnnkitError

    if per_class < 1:
        raise CnnkitError("--per-class must be 1 or more")
    if grid is not None and Path(grid).exists():
        raise CnnkitError(f"{grid} exists; choose another --grid path (it is never overwritten)")
    report = _inspect(root)
    if grid is not None:
        report.grid = draw_samples(report, Path(grid), per_class)
    return report


def _inspect(root: str | Path) -> FolderReport:
    found = scan(root)
    jobs = [(f, part, label) for part, files in found.parts.items() for f, label in files]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        facts = list(pool.map(lambda job: _facts(*job), jobs))
    good = [f for f in facts if not f.error]
    classes = sorted(set(found.class_folders["train"]))
    counts: dict[str, dict[str, int]] = {}
    for part in found.parts:
        tally = Counter(f.label for f in good if f.part == part)
        names = sorted(set(found.class_folders[part]) | set(classes))
        counts[part] = {c: tally.get(c, 0) for c in names}
    train_counts = [counts["train"][c] for c in classes]
    imbalance = (
        max(train_counts) / min(train_counts) if train_counts and min(train_counts) else np.inf
    )
    widths = np.array([f.width for f in good]) if good else np.zeros(1)
    heights = np.array([f.height for f in good]) if good else np.zeros(1)
    sizes = {
        "width_min": float(widths.min()), "width_median": float(np.median(widths)),
        "width_max": float(widths.max()), "height_min": float(heights.min()),
        "height_median": float(np.median(heights)), "height_max": float(heights.max()),
    }  # fmt: skip
    by_hash: dict[str, list[FileFacts]] = defaultdict(list)
    for f in facts:
        by_hash[f.md5].append(f)
    across = [
        [g.path for g in group]
        for group in by_hash.values()
        if len(group) > 1 and len({g.part for g in group}) > 1
    ]
    within = sum(
        len(group) - len({g.part for g in group}) for group in by_hash.values() if len(group) > 1
    )
    return FolderReport(
        root=str(found.root),
        layout=found.layout,
        classes=classes,
        counts=counts,
        imbalance=float(imbalance),
        sizes=sizes,
        formats=dict(Counter(f.format for f in good).most_common()),
        modes=dict(Counter(f.mode for f in good).most_common()),
        unreadable=[(f.path, f.error) for f in facts if f.error],
        skipped=list(found.skipped),
        duplicates_across_parts=across,
        duplicates_within_parts=within,
        files=facts,
    )


def draw_samples(report: FolderReport, path: Path, per_class: int = 8, seed: int = 0) -> Path:
    """A grid: one row per class (at most 50), ``per_class`` random readable training images each."""
    from cnnkit.data.images import load_image
    from cnnkit.figures import plot_samples

    rng = np.random.default_rng(seed)
    rows = []
    for name in report.classes[:50]:
        files = [f for f in report.files if f.label == name and not f.error and f.part == "train"]
        picked = rng.choice(len(files), size=min(per_class, len(files)), replace=False)
        images = [load_image(files[i].path, (96, 96), 3) for i in picked]
        rows.append((f"{name}\n({report.counts['train'].get(name, 0)})", images))
    more = f" (first 50 of {len(report.classes)} classes)" if len(report.classes) > 50 else ""
    title = f"{Path(report.root).name}: random training images per class{more}"
    return plot_samples(rows, path, title, per_class)
