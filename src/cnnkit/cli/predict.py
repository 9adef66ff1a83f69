"""cnnkit predict: top-k classes for image files, folders and glob patterns, using a run's model."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from typing import Any

from cnnkit.log import printable

EXTRAS = "images"  # where stray positionals after an option go


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    from cnnkit.runs import ENGINES

    parser: argparse.ArgumentParser = verbs.add_parser(
        "predict",
        help="classify image files, folders or glob patterns with a run's model",
        description=(
            "Classify images with RUN's model: files, folders (every image file under them, "
            "recursively) and glob patterns ('photos/**/*.jpg'), of any size, format or mode, "
            "converted as the training images were. Unreadable files are listed on stderr with "
            "the reason (exit status 2) and the rest are still answered."
        ),
    )
    parser.add_argument("run", metavar="RUN", help="a run folder printed by cnnkit train")
    parser.add_argument("images", nargs="+", metavar="PATH", help="image files, folders, globs")
    parser.add_argument(
        "--top-k", type=int, default=3, metavar="K", help="classes to show (default 3)"
    )
    parser.add_argument(
        "--min-confidence",
        default="0",  # read by check_min_confidence: a bad value is then one line
        metavar="P",
        help="answer 'unsure' instead of a class where the most likely class's (calibrated) "
        "probability is below P, in [0, 1] (the run's report says which P gives which accuracy)",
    )
    parser.add_argument(
        "--format",
        choices=("table", "csv", "jsonl", "json"),
        default="table",
        help="table (default), csv (image, class_1, probability_1, ...), jsonl (one JSON "
        "object a line) or json (one array)",
    )
    parser.add_argument("--json", action="store_true", help="the same as --format json")
    parser.add_argument(
        "--batch-size", type=int, default=256, metavar="N", help="images per model call"
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="keras",
        help="keras (model.keras, default), or the run's export of that format (cnnkit export)",
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "on", "off"),
        default="auto",
        help="a progress bar on stderr (auto: when stderr is a terminal and there are many files)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.errors import CnnkitError, ImageError
    from cnnkit.predictor import Prediction, Predictor, check_min_confidence, expand_paths

    args.min_confidence = check_min_confidence(args.min_confidence)
    unsure_column = args.min_confidence > 0  # the answer shown apart from the top classes
    if args.top_k < 1:
        raise CnnkitError("--top-k must be 1 or more")
    if args.batch_size < 1:
        raise CnnkitError("--batch-size must be 1 or more")
    fmt = "json" if args.json else args.format
    files, errors = expand_paths(args.images)
    predictor = Predictor(args.run, batch_size=args.batch_size, engine=args.engine)
    width = max((len(printable(p)) for p in files), default=0)
    said_width = max(len("unsure"), *(len(printable(c)) for c in predictor.class_names))
    writer = csv.writer(sys.stdout, lineterminator="\n") if fmt == "csv" else None
    if writer:
        k = min(args.top_k, len(predictor.class_names))
        writer.writerow(
            ["image", *(["answer"] if unsure_column else []),
             *(f"{c}_{i}" for i in range(1, k + 1) for c in ("class", "probability"))]
        )  # fmt: skip
    collected: list[dict[str, Any]] = []
    answered = 0
    start = time.perf_counter()

    def emit(p: Prediction) -> None:
        if fmt == "json":
            collected.append(p.to_dict())
        elif fmt == "jsonl":
            print(json.dumps(p.to_dict()), flush=False)
        elif writer:
            said = [p.answer or "unsure"] if unsure_column else []
            writer.writerow(
                [p.source, *said, *(v for name, prob in p.top for v in (name, f"{prob:.6f}"))]
            )
        else:
            cells = "  ".join(f"{printable(name)} {prob:.4f}" for name, prob in p.top)
            shown = "unsure" if p.unsure else printable(p.answer or "")
            said = f"{shown:<{said_width}}  " if unsure_column else ""
            print(f"{printable(p.source):<{width}}  {said}{cells}")

    show = args.progress == "on" or (
        args.progress == "auto" and sys.stderr.isatty() and len(files) > 64
    )
    with _progress(show, len(files)) as advance:
        for answer in predictor.predict_iter(
            files, top_k=args.top_k, chunk=max(args.batch_size, 64),
            min_confidence=args.min_confidence,
        ):  # fmt: skip
            if isinstance(answer, ImageError):
                errors.append(answer)
            else:
                emit(answer)
                answered += 1
            advance()
    if fmt == "json":
        print(json.dumps(collected, indent=2))
    sys.stdout.flush()
    for error in errors:
        print(f"cnnkit: error: {printable(error)}", file=sys.stderr)
    if len(files) > 64:  # a batch job: say how it went (a few files speak for themselves)
        seconds = time.perf_counter() - start
        print(
            f"cnnkit: {answered} images answered, {len(errors)} not "
            f"({answered / max(seconds, 1e-9):.0f} images/s)",
            file=sys.stderr,
        )
    return 2 if errors else 0


def _progress(show: bool, total: int) -> Any:
    """A context giving ``advance()``: a rich progress bar on stderr, or nothing."""
    import contextlib

    if not show:
        return contextlib.nullcontext(lambda: None)

    @contextlib.contextmanager
    def bar() -> Any:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        columns = ("predicting", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("predict", total=total)
            yield lambda: progress.advance(task)

    return bar()
