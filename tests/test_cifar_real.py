"""A smoke run on the real CIFAR-10 copy beside the checkout; skipped, with the reason, elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnkit.runs import Run
from conftest import cli, last_line, shared_cifar

ARCHIVE = shared_cifar()
pytestmark = [
    pytest.mark.cifar,
    pytest.mark.slow,
    pytest.mark.skipif(
        ARCHIVE is None,
        reason="real CIFAR-10 not found at ../shared/data/cifar-10-python.tar.gz "
        "(set CNNKIT_TEST_CIFAR to the archive to run this test)",
    ),
]


def test_real_cifar10_smoke(tmp_path: Path) -> None:
    assert ARCHIVE is not None
    result = cli(
        "train",
        "--preset",
        "smoke",
        "--runs-dir",
        str(tmp_path),
        "train.epochs=1",
        "data.train_subset=600",
        "data.test_subset=300",
        "report.enabled=false",  # the report is tested on the digits run
        env={"CNNKIT_DATA_DIR": str(ARCHIVE.parent)},
    )
    run = last_line(result)
    meta = Run(run).meta()
    assert meta["status"] == "complete"
    assert meta["dataset"]["classes"][:3] == ["airplane", "automobile", "bird"]
    assert (meta["dataset"]["train"], meta["dataset"]["val"], meta["dataset"]["test"]) == (
        480,
        120,
        300,
    )
    metrics = Run(run).metrics()["test"]
    assert metrics["support"] == [30] * 10  # the stratified test subset
    evaluated = cli("evaluate", str(run), "--json", env={"CNNKIT_DATA_DIR": str(ARCHIVE.parent)})
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["confusion"] == metrics["confusion"]
