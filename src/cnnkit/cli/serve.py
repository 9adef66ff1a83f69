"""cnnkit serve: a run's model as an HTTP service (FastAPI + uvicorn), with a page to try it."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    from cnnkit.config import key_range
    from cnnkit.runs import ENGINES

    tta = key_range("train.tta")  # the views a run may average; the service takes the same
    assert tta is not None

    parser: argparse.ArgumentParser = verbs.add_parser(
        "serve",
        help="serve a run's model over HTTP: POST /predict, a web page at /, OpenAPI at /docs",
        description=(
            "Serve RUN's model: POST /predict (images as multipart field 'file', or the raw bytes "
            "as the body; ?top_k=K&explain=true), GET /health, GET /model, GET /openapi.json, and "
            "a page at / to drop an image on. Concurrent requests are batched into one model call."
        ),
    )
    parser.add_argument("run", metavar="RUN", help="a run folder printed by cnnkit train")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--engine", choices=ENGINES, default="keras",
                        help="keras (default), or the run's export of that format")  # fmt: skip
    parser.add_argument("--tta", type=int, choices=range(int(tta.low), int(tta.high) + 1), default=0,
                        help="test-time augmentation: 0 (default, one pass: lowest latency), or 1-2 "
                        "as `cnnkit predict` uses the run's train.tta")  # fmt: skip
    parser.add_argument(
        "--max-mb", type=float, default=10.0, help="largest upload per image, MB (default 10)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="largest image, width x height (default $CNNKIT_MAX_PIXELS, else 40,000,000)",
    )
    parser.add_argument(
        "--max-images", type=int, default=16, help="images per request (default 16)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="seconds a request may wait for its answer (default 10)",
    )
    parser.add_argument(
        "--max-batch", type=int, default=64, help="images per model call (default 64)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.data.images import max_pixels
    from cnnkit.service import Limits, serve

    pixels = max_pixels() if args.max_pixels is None else args.max_pixels
    limits = Limits(max_bytes=int(args.max_mb * 1e6), max_pixels=pixels,
                    max_images=args.max_images, timeout=args.timeout, max_batch=args.max_batch)  # fmt: skip
    serve(args.run, args.host, args.port, args.engine, args.tta, limits)
    return 0
