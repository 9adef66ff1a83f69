"""cnnkit export: a run's model as ONNX, a TensorFlow SavedModel or TFLite, checked against Keras."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    from cnnkit.runs import EXPORT_FORMATS

    parser: argparse.ArgumentParser = verbs.add_parser(
        "export",
        help="export a run's model to ONNX, SavedModel or TFLite, with a parity check",
        description=(
            "Export RUN's network (in float32; it takes raw 0-255 images) to RUN/export/, then run "
            "the exported file in its own runtime on up to 1,000 test images and compare its "
            "probabilities with Keras's (exit status 2 when they differ by more than 1e-4)."
        ),
    )
    parser.add_argument("run", metavar="RUN", help="a run folder printed by cnnkit train")
    parser.add_argument("--format", required=True, choices=tuple(EXPORT_FORMATS))
    parser.add_argument(
        "--out", type=Path, metavar="PATH", help="where to write (default RUN/export/)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing export")
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.exporter import ATOL, export

    done = export(args.run, args.format, args.out, args.force)
    p = done.parity
    for note in done.notes:
        print(f"cnnkit: note: {note}")
    print(
        f"parity on {p.images} {p.source}: largest probability difference "
        f"{p.max_abs_difference:.2e} (allowed {ATOL:.0e}); top-1 identical to Keras float32 for "
        f"{p.top1_agreement_float32:.2%}, to the run's model.keras for {p.top1_agreement_run_model:.2%}"
    )
    print(done.path)
    return 0
