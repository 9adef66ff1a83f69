"""cnnkit on every Keras backend: JAX and PyTorch beside TensorFlow (this process's).

Each backend runs tests/backend_check.py in a process of its own: the smoke path (train,
evaluate, predict, report) and the fast recipe interrupted by Ctrl-C mid-epoch and resumed bit
for bit. The fast recipe's first steps under JAX are compared with TensorFlow's from the same
weights: the same loss, to float32 round-off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
CHECK = REPO / "tests" / "backend_check.py"


def _check(backend: str, *args: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, str(CHECK), *args], capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_BACKEND": backend},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def _steps(weights: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    tensorflow = _check("tensorflow", "steps", str(weights))  # writes the starting weights
    return tensorflow, _check("jax", "steps", str(weights))


@pytest.fixture(scope="module")
def checks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[Any]]]:
    """The checks of every backend, started together two at a time (each is a process of its
    own, most of it start-up and tracing, which two cores overlap); each test waits for its own."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = {
            backend: pool.submit(_check, backend, "recipe", str(tmp_path_factory.mktemp(backend)))
            for backend in ("jax", "torch")
        }
        started["steps"] = pool.submit(_steps, tmp_path_factory.mktemp("steps") / "start.npz")
        yield started
        for future in started.values():
            future.exception()  # none is left running past the module


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_smoke_and_the_fast_recipe_with_resume(
    backend: str, checks: dict[str, Future[Any]]
) -> None:
    found = checks[backend].result()
    assert found["backend"] == backend
    smoke = found["smoke"]
    assert smoke["status"] == "complete" and smoke["backend"] == backend and smoke["report"]
    assert smoke["evaluate"] == pytest.approx(smoke["test_accuracy"])
    assert smoke["predicted"] == [2, 2, 2]
    assert found["interrupted"] == "interrupted"  # a real Ctrl-C saved a checkpoint mid-epoch
    fast = found["fast"]
    assert fast["status"] == "complete"
    assert fast["same_weights"] and fast["epochs"] == 2
    assert fast["history_difference"] < 1e-6
    assert fast["test_accuracy"] == fast["reference_accuracy"]


def test_fast_recipe_first_steps_match_tensorflow(checks: dict[str, Future[Any]]) -> None:
    tensorflow, jax = checks["steps"].result()
    assert (tensorflow["backend"], jax["backend"]) == ("tensorflow", "jax")
    assert jax["losses"] == pytest.approx(tensorflow["losses"], rel=2e-4)
    assert tensorflow["losses"][-1] < tensorflow["losses"][0]  # it learns: not a constant
