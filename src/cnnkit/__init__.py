"""cnnkit: build, train, evaluate and use image classifiers with Keras 3.

The Python API mirrors the command line::

    import cnnkit
    run = cnnkit.train(cnnkit.load_config("smoke", overrides=["data.name=digits"]))
    result = cnnkit.evaluate(run)
    top = cnnkit.Predictor(run).predict(["cat.png"], top_k=3)

Names are imported lazily so that ``import cnnkit`` and ``cnnkit --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Config": "cnnkit.config",
    "load_config": "cnnkit.config",
    "list_presets": "cnnkit.config",
    "train": "cnnkit.workflow",
    "evaluate": "cnnkit.workflow",
    "resume": "cnnkit.workflow",
    "Run": "cnnkit.runs",
    "open_run": "cnnkit.runs",
    "Predictor": "cnnkit.predict",
    "create_model": "cnnkit.models",
    "list_models": "cnnkit.models",
    "load_dataset": "cnnkit.data",
    "list_datasets": "cnnkit.data",
    "CnnkitError": "cnnkit.errors",
}

__all__ = [
    "CnnkitError",
    "Config",
    "Predictor",
    "Run",
    "__version__",
    "create_model",
    "evaluate",
    "list_datasets",
    "list_models",
    "list_presets",
    "load_config",
    "load_dataset",
    "open_run",
    "resume",
    "train",
]

if TYPE_CHECKING:
    from cnnkit.config import Config, list_presets, load_config
    from cnnkit.data import list_datasets, load_dataset
    from cnnkit.errors import CnnkitError
    from cnnkit.models import create_model, list_models
    from cnnkit.predict import Predictor
    from cnnkit.runs import Run, open_run
    from cnnkit.workflow import evaluate, resume, train


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnkit' has no attribute {name!r}")
