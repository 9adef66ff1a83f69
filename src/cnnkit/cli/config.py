"""cnnkit config: print the resolved configuration (defaults < preset < file < key=value)."""

from __future__ import annotations

import argparse
from typing import Any

EXTRAS = "overrides"  # where stray positionals after an option go


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    from cnnkit.config import list_presets

    parser: argparse.ArgumentParser = verbs.add_parser(
        "config",
        help="show the resolved configuration",
        description="Print the configuration that `cnnkit train` would use with the same options.",
    )
    parser.add_argument("--preset", choices=list_presets(), help="a named recipe")
    parser.add_argument("--config", metavar="FILE", help="a YAML file of settings")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="settings")
    parser.add_argument(
        "--presets", action="store_true", help="list the presets and what they change"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.config import PRESETS, load_config

    if args.presets:
        for name, changes in PRESETS.items():
            diff = " ".join(f"{k}={v}" for k, v in changes.items()) or "(the defaults)"
            print(f"{name:<8} {diff}")
        return 0
    print(load_config(args.preset, args.config, args.overrides).to_yaml(), end="")
    return 0
