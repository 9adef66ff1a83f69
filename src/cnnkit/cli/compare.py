"""cnnkit compare: runs side by side, as a table here and a page with their curves on one chart."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(
        "compare",
        help="set runs side by side: config differences, final metrics, curves on one chart",
        description=(
            "Compare two or more runs: print their final numbers and the config keys in which "
            "they differ, and write a folder with compare.html (self-contained), compare.json "
            "and the curves of all runs on one chart, per epoch and against training time."
        ),
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN", help="run folders printed by cnnkit train"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="the folder to write (default: compare-RUN-RUN... beside the first run; "
        "an existing folder is never overwritten: -2, -3... is added)",
    )
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.comparison import compare, config_cell, text_table

    comparison = compare(args.runs, args.out)
    if args.json:
        print(json.dumps({**comparison.to_dict(), "folder": str(comparison.page.parent)}, indent=2))
        return 0
    print(text_table(comparison.rows()))
    if comparison.differences:
        print()
        rows = [
            {
                "config key": key,
                **{r.label: config_cell(v) for r, v in zip(comparison.runs, values, strict=True)},
            }
            for key, values in comparison.differences.items()
        ]
        print(text_table(rows))
    print()
    print(comparison.page)
    return 0
