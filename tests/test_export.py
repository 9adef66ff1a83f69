"""`cnnkit export`: each format written, run in its own runtime and checked against Keras;
predict through an export; nothing replaced without --force."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli


@pytest.fixture(scope="module")
def run_copy(digits_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("export") / "digits"
    shutil.copytree(digits_run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    return copy


@pytest.fixture(scope="module")
def pictures(run_copy: Path) -> tuple[list[Path], list[str]]:
    """Six noise pictures and Keras's top class for each (computed once for all formats)."""
    files = []
    for i, image in enumerate(np.random.default_rng(1).integers(0, 255, (6, 8, 8), dtype=np.uint8)):
        files.append(run_copy.parent / f"noise_{i}.png")
        Image.fromarray(image).resize((32, 32)).save(files[-1])
    keras = json.loads(run_cli("predict", str(run_copy), *map(str, files), "--json").stdout)
    return files, [a["top"][0]["class"] for a in keras]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite", "saved_model"])
def test_export_agrees_with_keras(
    run_copy: Path, pictures: tuple[list[Path], list[str]], fmt: str
) -> None:
    done = run_cli("export", str(run_copy), "--format", fmt)
    assert done.returncode == 0, done.stderr
    target = Path(done.stdout.strip().splitlines()[-1])
    assert target.exists() and target.parent == run_copy / "export"
    record = json.loads((run_copy / "export" / f"{fmt}.json").read_text())
    parity = record["parity"]
    # All 360 test digits, against Keras in float32 (the exported precision).
    assert parity["images"] == 360 and parity["source"] == "test split" and parity["passed"]
    assert parity["max_abs_difference"] <= 1e-4 and parity["top1_agreement_float32"] == 1.0
    assert parity["top1_agreement_run_model"] >= 0.99  # the run's model computes in bfloat16

    # Predicting through the export answers as predict through Keras does.
    files, keras = pictures
    other = json.loads(run_cli("predict", str(run_copy), *map(str, files), "--json",
                               "--engine", fmt).stdout)  # fmt: skip
    assert keras == [a["top"][0]["class"] for a in other]

    # An existing export is not replaced unless asked.
    before = target.stat().st_mtime_ns
    again = run_cli("export", str(run_copy), "--format", fmt)
    assert again.returncode == 2 and "--force" in again.stderr
    assert target.stat().st_mtime_ns == before
    if fmt == "onnx":  # (once: an export costs ~10 s)
        assert run_cli("export", str(run_copy), "--format", fmt, "--force").returncode == 0
        assert target.stat().st_mtime_ns != before


def test_export_errors_are_one_line(digits_run: Path, tmp_path: Path) -> None:
    missing = run_cli("predict", str(digits_run), "x.png", "--engine", "onnx")
    if (digits_run / "export" / "model.onnx").exists():  # the shared run is never exported
        pytest.fail("the shared digits run was exported in place")
    assert missing.returncode == 2 and "cnnkit export" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    bad = run_cli("export", str(tmp_path), "--format", "onnx")
    assert bad.returncode == 2 and "not a cnnkit run" in bad.stderr
