"""cnnkit predict: top-k classes for image files, using a run folder's model."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXTRAS = "images"  # where stray positionals after an option go


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(
        "predict",
        help="classify image files with a run's model",
        description="Classify IMAGE files (any size, format or mode) with RUN's model.",
    )
    parser.add_argument("run", metavar="RUN", help="a run folder printed by cnnkit train")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    parser.add_argument(
        "--top-k", type=int, default=3, metavar="K", help="classes to show (default 3)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.errors import CnnkitError
    from cnnkit.predict import Predictor

    if args.top_k < 1:
        raise CnnkitError("--top-k must be 1 or more")
    predictor = Predictor(args.run)
    predictions, errors = predictor.predict(args.images, top_k=args.top_k)
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    else:
        width = max((len(p.source) for p in predictions), default=0)
        for p in predictions:
            cells = "  ".join(f"{name} {prob:.4f}" for name, prob in p.top)
            print(f"{p.source:<{width}}  {cells}")
    for error in errors:
        print(f"cnnkit: error: {error}", file=sys.stderr)
    return 2 if errors else 0
