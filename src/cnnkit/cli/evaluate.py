"""cnnkit evaluate: test metrics of a run's model, from the run folder alone."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXTRAS = "overrides"  # where stray positionals after an option go


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(
        "evaluate",
        help="evaluate a run's model on its test split",
        description="Evaluate RUN's model on the test split of the data it was trained on.",
    )
    parser.add_argument("run", metavar="RUN", help="a run folder printed by cnnkit train")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="data.key=value",
        help="where to find the data on this machine, e.g. data.path=DIR",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument(
        "--errors",
        metavar="CSV",
        help="also list every wrong prediction in this new CSV file, most confident first, "
        "by file name where the data has them (an existing file is never overwritten)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.metrics import classification_report
    from cnnkit.workflow import evaluate

    result = evaluate(args.run, args.overrides, errors=args.errors)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"test loss      {result.loss:.4f}")
    print(
        f"test accuracy  {result.accuracy:.4f}  ({result.num_images} images, "
        f"{result.images_per_second:.0f} images/s)"
    )
    print(f"calibration    {result.ece:.4f}  (expected calibration error, 15 bins)")
    print(f"Brier score    {result.brier:.4f}")
    print()
    print(classification_report(result))
    return 0
