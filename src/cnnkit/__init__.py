"""cnnkit: build, train, evaluate and use image classifiers with Keras 3.

The Python API mirrors the command line, one function per verb::

    import cnnkit
    run = cnnkit.train(cnnkit.load_config("smoke", overrides=["data.name=digits"]))
    result = cnnkit.evaluate(run)                     # cnnkit evaluate RUN
    page = cnnkit.report(run)                         # cnnkit report RUN
    predictions, errors = cnnkit.predict(run, ["cat.png", "photos/"], top_k=3)
    exported = cnnkit.export(run, "onnx")             # cnnkit export RUN --format onnx
    comparison = cnnkit.compare([run, "runs/other"])  # cnnkit compare RUN RUN
    cnnkit.serve(run, port=8000)                      # cnnkit serve RUN
    study = cnnkit.tune("space.yaml", config, trials=20)  # cnnkit tune --space space.yaml
    cnnkit.launch(["train", "--preset", "smoke"], nproc=2)  # cnnkit launch --nproc 2 -- train

What a run is doing is logged to the ``cnnkit`` logger (:mod:`cnnkit.log`); nothing is printed.
Names are imported lazily so that ``import cnnkit`` and ``cnnkit --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Before any entry point (the command, this API, serve, the benchmarks) can import TensorFlow.
from cnnkit.env import configure_cpu

configure_cpu()

# Module names are nouns and API names verbs, so that importing a module never hides a function.
_LAZY = {
    # train, resume, evaluate (cnnkit train [--resume], cnnkit evaluate)
    "train": "cnnkit.workflow",
    "resume": "cnnkit.workflow",
    "evaluate": "cnnkit.workflow",
    # cnnkit launch (data-parallel processes of train)
    "launch": "cnnkit.launcher",
    # cnnkit tune, cnnkit tune show
    "tune": "cnnkit.tuning",
    "describe_study": "cnnkit.tuning",
    # cnnkit report, compare, predict, export, serve, data inspect, env
    "report": "cnnkit.reporter",
    "compare": "cnnkit.comparison",
    "predict": "cnnkit.predictor",
    "Predictor": "cnnkit.predictor",
    "export": "cnnkit.exporter",
    "serve": "cnnkit.service",
    "create_app": "cnnkit.service",
    "inspect_folder": "cnnkit.data.inspection",
    "describe_environment": "cnnkit.env",
    # cnnkit config, models; data sources
    "Config": "cnnkit.config",
    "load_config": "cnnkit.config",
    "list_presets": "cnnkit.config",
    "create_model": "cnnkit.models",
    "list_models": "cnnkit.models",
    "load_dataset": "cnnkit.data",
    "list_datasets": "cnnkit.data",
    # run folders and errors
    "Run": "cnnkit.runs",
    "open_run": "cnnkit.runs",
    "CnnkitError": "cnnkit.errors",
}

__all__ = [
    "CnnkitError",
    "Config",
    "Predictor",
    "Run",
    "__version__",
    "compare",
    "create_app",
    "create_model",
    "describe_environment",
    "describe_study",
    "evaluate",
    "export",
    "inspect_folder",
    "launch",
    "list_datasets",
    "list_models",
    "list_presets",
    "load_config",
    "load_dataset",
    "open_run",
    "predict",
    "report",
    "resume",
    "serve",
    "train",
    "tune",
]

if TYPE_CHECKING:
    from cnnkit.comparison import compare
    from cnnkit.config import Config, list_presets, load_config
    from cnnkit.data import list_datasets, load_dataset
    from cnnkit.data.inspection import inspect_folder
    from cnnkit.env import describe_environment
    from cnnkit.errors import CnnkitError
    from cnnkit.exporter import export
    from cnnkit.launcher import launch
    from cnnkit.models import create_model, list_models
    from cnnkit.predictor import Predictor, predict
    from cnnkit.reporter import report
    from cnnkit.runs import Run, open_run
    from cnnkit.service import create_app, serve
    from cnnkit.tuning import describe_study, tune
    from cnnkit.workflow import evaluate, resume, train


def __getattr__(name: str) -> Any:
    if name == "__version__":  # pyproject.toml's, as installed
        from cnnkit.env import cnnkit_version

        return cnnkit_version()
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "__version__"})
