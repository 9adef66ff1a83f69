"""cnnkit serve: a run's model as an HTTP service (FastAPI + uvicorn), with a page to try it."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(verbs: Any) -> argparse.ArgumentParser:
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
    parser.add_argument("--engine", choices=("keras", "onnx", "tflite", "saved_model"), default="keras",
                        help="keras (default), or the run's export of that format")  # fmt: skip
    parser.add_argument("--tta", type=int, choices=(0, 1, 2), default=0,
                        help="test-time augmentation: 0 (default, one pass: lowest latency), or 1-2 "
                        "as `cnnkit predict` uses the run's train.tta")  # fmt: skip
    parser.add_argument(
        "--max-mb", type=float, default=10.0, help="largest upload per image, MB (default 10)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=40_000_000,
        help="largest image, width x height (default 40,000,000)",
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
    from cnnkit.errors import CnnkitError

    try:
        import uvicorn
    except ImportError:
        raise CnnkitError(
            "cnnkit serve needs fastapi and uvicorn: pip install 'cnnkit[serve]'"
        ) from None
    from cnnkit.predict import Predictor
    from cnnkit.serve import Limits, create_app

    _check_port(args.host, args.port)  # before loading the model, and before saying "serving"
    limits = Limits(max_bytes=int(args.max_mb * 1e6), max_pixels=args.max_pixels,
                    max_images=args.max_images, timeout=args.timeout, max_batch=args.max_batch)  # fmt: skip
    predictor = Predictor(args.run, engine=args.engine)
    app = create_app(predictor, limits, args.tta)
    print(
        f"cnnkit: serving {predictor.run.path} ({len(predictor.class_names)} classes, engine "
        f"{args.engine}) at http://{args.host}:{args.port}/  (API: /predict, /docs)",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=5)
    return 0


def _check_port(host: str, port: int) -> None:
    """A one-line error now for an address that is taken or not ours, rather than uvicorn's
    log line after start-up."""
    import socket

    from cnnkit.errors import CnnkitError

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((host, port))
    except OSError as exc:
        raise CnnkitError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port (or --host), "
            f"or stop what is using it"
        ) from None
