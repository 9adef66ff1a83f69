"""cnnkit launch: train one run data-parallel over several processes of this machine (and others)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(
        "launch",
        help="train data-parallel over several processes (JAX backend)",
        description="Start NPROC `cnnkit train` processes that train one run together with "
        "keras.distribution on the JAX backend (train.distribute=data_parallel; "
        "train.batch_size is the global batch), and watch them: Ctrl-C stops all of them at a "
        "checkpoint; if one dies, the others are stopped and the last checkpoint stays "
        "resumable with any number of processes. Example: "
        "cnnkit launch --nproc 2 -- train --preset smoke. On several machines run one launcher "
        "per machine with --nodes, --node-rank and --coordinator (see the scale-out guide).",
    )
    parser.add_argument(
        "--nproc", type=int, default=1, metavar="N", help="processes on this machine (default 1)"
    )
    parser.add_argument(
        "--nodes", type=int, default=1, metavar="M", help="machines in all (default 1)"
    )
    parser.add_argument(
        "--node-rank", type=int, default=0, metavar="R", help="this machine's number, 0..M-1"
    )
    parser.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="node 0's address for the processes to meet (default: 127.0.0.1, a free port)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds the others get to end once a process has died (default 10)",
    )
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, help="-- train [train's options and key=value]"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.launcher import launch

    return launch(
        args.command,
        args.nproc,
        nodes=args.nodes,
        node_rank=args.node_rank,
        coordinator=args.coordinator,
        grace=args.grace,
        debug=getattr(args, "debug", False),
    )
