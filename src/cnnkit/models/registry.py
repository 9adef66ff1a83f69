"""The model registry: every factory registers itself here under its function name
(:func:`register_model`), and :mod:`cnnkit.models` looks names up here (``create_model``,
``list_models``). A new model is one module with a decorated factory, and one line in
``cnnkit.models.BUILTIN``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Factory = Callable[..., Any]
_REGISTRY: dict[str, Factory] = {}


def register_model(factory: Factory) -> Factory:
    """Decorator: make ``factory`` available under its function name."""
    _REGISTRY[factory.__name__] = factory
    return factory


def registered() -> dict[str, Factory]:
    """The factories registered so far, by name."""
    return dict(_REGISTRY)
