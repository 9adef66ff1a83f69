"""cnnkit train: train a model and leave a complete run folder; prints its path last."""

from __future__ import annotations

import argparse
from typing import Any

EXTRAS = "overrides"  # where stray positionals after an option go


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    from cnnkit.config import list_presets

    parser: argparse.ArgumentParser = verbs.add_parser(
        "train",
        help="train a model into a new run folder",
        description="Train a model. Settings: defaults < --preset < --config FILE < key=value. "
        "The run folder's path is the last line printed. "
        "`cnnkit config` lists every key with its current value.",
    )
    parser.add_argument(
        "--preset", choices=list_presets(), help="a named recipe (seed: the tutorial)"
    )
    parser.add_argument("--config", metavar="FILE", help="a YAML file of settings")
    parser.add_argument(
        "--resume", metavar="RUN", help="continue RUN from its last checkpoint, with its own config"
    )
    parser.add_argument(
        "--force", action="store_true", help="with --resume: let key=value change the config"
    )
    parser.add_argument(
        "--runs-dir", metavar="DIR", default="runs", help="where run folders go (default: runs)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="settings, e.g. train.epochs=10"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.errors import CnnkitError

    if args.resume:
        if args.preset or args.config:
            raise CnnkitError("--resume takes the run's own config; drop --preset and --config")
        from cnnkit.workflow import resume

        print(resume(args.resume, args.overrides, force=args.force).path)
        return 0
    if args.force:
        raise CnnkitError("--force only goes with --resume")
    from cnnkit.config import load_config
    from cnnkit.workflow import train

    config = load_config(args.preset, args.config, args.overrides)
    print(train(config, args.runs_dir).path)
    return 0
