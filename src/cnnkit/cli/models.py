"""cnnkit models: the registered model factories and their parameters."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = verbs.add_parser(
        "models", help="list the models", description="List the registered models."
    )
    parser.add_argument("--shape", default="32,32,3", help="input shape for the parameter count")
    parser.add_argument("--classes", type=int, default=10, help="classes for the parameter count")
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.errors import CnnkitError
    from cnnkit.models import (
        create_model,
        get_factory,
        list_models,
        model_hparams,
        takes_weights,
    )

    try:
        shape = tuple(int(v) for v in args.shape.split(","))
        assert len(shape) == 3
    except (ValueError, AssertionError):
        raise CnnkitError(f"--shape must be H,W,C such as 32,32,3, got {args.shape!r}") from None
    for name in list_models():
        # Random weights: counting parameters must not download ImageNet weights.
        model = create_model(name, shape, args.classes, weights="none")  # type: ignore[arg-type]
        doc = (get_factory(name).__doc__ or "").strip().splitlines()[0]
        params = ", ".join(f"{k}={v!r}" for k, v in model_hparams(name).items())
        pretrained = "  (model.weights: imagenet, none or a file)" if takes_weights(name) else ""
        print(f"{name:<16} {model.count_params():>11,} parameters  {doc}")
        print(f"{'':<16} model.params: {params or '(none)'}{pretrained}")
    return 0
