"""cnnkit report: draw a run's report page (report.html) again, from the run folder."""

from __future__ import annotations

import argparse
from typing import Any

EXTRAS = "overrides"  # where stray positionals after an option go


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(
        "report",
        help="write a run's report page: curves, metrics, mistakes, calibration, heatmaps",
        description=(
            "Write RUN/report.html (self-contained: opens offline) and every picture in it as a "
            "PNG in RUN/figures. `cnnkit train` writes it at the end of a run; this redraws it."
        ),
    )
    parser.add_argument("run", metavar="RUN", help="a run folder printed by cnnkit train")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="data.key=value",
        help="where the run's data is on this machine (for the test images), e.g. data.path=DIR",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.reporter import report

    written = report(args.run, args.overrides)
    for note in written.notes:
        print(f"cnnkit: note: {note}")
    print(f"{written.path}  ({len(written.figures)} figures, {written.seconds:.1f} s)")
    return 0
