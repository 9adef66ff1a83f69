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


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_smoke_and_the_fast_recipe_with_resume(backend: str, tmp_path: Path) -> None:
    found = _check(backend, "recipe", str(tmp_path))
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


def test_fast_recipe_first_steps_match_tensorflow(tmp_path: Path) -> None:
    weights = tmp_path / "start.npz"
    tensorflow = _check("tensorflow", "steps", str(weights))  # writes the starting weights
    jax = _check("jax", "steps", str(weights))
    assert (tensorflow["backend"], jax["backend"]) == ("tensorflow", "jax")
    assert jax["losses"] == pytest.approx(tensorflow["losses"], rel=2e-4)
    assert tensorflow["losses"][-1] < tensorflow["losses"][0]  # it learns: not a constant
