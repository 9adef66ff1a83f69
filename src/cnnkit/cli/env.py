"""cnnkit env: versions, backend, CPU features, accelerators and the precision auto would pick."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(
        "env", help="describe this machine and the backend", description="Describe the environment."
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.env import describe_environment

    info = describe_environment()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        print(f"{key:<16} {shown if shown not in ('', None) else '-'}")
    return 0
