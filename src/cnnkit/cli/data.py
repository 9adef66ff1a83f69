"""cnnkit data inspect DIR: classes, counts, imbalance, sizes, unreadable files, duplicates
across splits, and a PNG grid of sample images per class."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cnnkit.log import printable


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(
        "data",
        help="look at an image folder before training on it",
        description="Look at datasets. `cnnkit data inspect DIR` reports an image folder "
        "(DIR/<class>/... or DIR/train|val|test/<class>/...).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    inspect = actions.add_parser(
        "inspect",
        help="classes, counts, sizes, unreadable files, duplicates, and a sample grid",
        description="Decode every image of DIR and report what training would see.",
    )
    inspect.add_argument("dir", metavar="DIR", help="the image folder")
    inspect.add_argument(
        "--grid",
        metavar="PNG",
        help="where to write the sample grid (default: DIRNAME-samples.png here; "
        "an existing file is never overwritten)",
    )
    inspect.add_argument("--per-class", type=int, default=8, help="images per class in the grid")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.data.inspection import inspect_folder

    grid = (
        Path(args.grid)
        if args.grid
        else _free(Path(f"{Path(args.dir).resolve().name}-samples.png"))
    )
    report = inspect_folder(args.dir, grid, args.per_class)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"{printable(report.root)}: layout {report.layout}, {len(report.classes)} classes")
    parts = list(report.counts)
    width = max((len(printable(c)) for c in report.classes), default=5)
    print(f"  {'class':<{width}}  " + "  ".join(f"{p:>7}" for p in parts))
    for name in sorted({c for counts in report.counts.values() for c in counts}):
        cells = "  ".join(f"{report.counts[p].get(name, 0):>7}" for p in parts)
        print(f"  {printable(name):<{width}}  {cells}")
    ratio = (
        "a class has no images" if report.imbalance == float("inf") else f"{report.imbalance:.2f}"
    )
    print(f"imbalance (largest / smallest training class): {ratio}")
    s = report.sizes
    print(
        f"sizes: width {s['width_min']:.0f}..{s['width_max']:.0f} (median {s['width_median']:.0f}), "
        f"height {s['height_min']:.0f}..{s['height_max']:.0f} (median {s['height_median']:.0f})"
    )
    print(f"formats: {_tally(report.formats)}; modes: {_tally(report.modes)}")
    print(f"unreadable: {len(report.unreadable)}")
    for path, reason in report.unreadable[:20]:
        print(f"  {printable(path)}: {reason}")
    print(f"skipped (not images, links leaving the folder, ...): {len(report.skipped)}")
    for path, reason in report.skipped[:20]:
        print(f"  {printable(path)}: {reason}")
    print(
        f"duplicates: {len(report.duplicates_across_parts)} groups of identical files across "
        f"parts, {report.duplicates_within_parts} extra copies within a part"
    )
    for group in report.duplicates_across_parts[:10]:
        print(f"  {' = '.join(printable(g) for g in group)}")
    print(f"sample grid: {printable(grid)}")
    return 0


def _tally(counts: dict[str, int]) -> str:
    return ", ".join(f"{k or '?'} {v}" for k, v in counts.items()) or "none"


def _free(path: Path) -> Path:
    n = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate
