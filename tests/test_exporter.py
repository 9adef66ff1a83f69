"""`cnnkit export`: each format written, run in its own runtime and checked against Keras;
predict through an export; nothing replaced without --force."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.runs import EXPORT_FORMATS, Run
from conftest import cli, run_cli


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
    keras = json.loads(cli("predict", str(run_copy), *map(str, files), "--json").stdout)
    return files, [a["top"][0]["class"] for a in keras]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(EXPORT_FORMATS))
def test_export_agrees_with_keras(
    run_copy: Path, pictures: tuple[list[Path], list[str]], fmt: str
) -> None:
    # ONNX as a real process; the others through the same entry point in this one.
    done = (run_cli if fmt == "onnx" else cli)("export", str(run_copy), "--format", fmt)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr  # no library's warnings leak through
    target = Path(done.stdout.strip().splitlines()[-1])
    assert target == Run(run_copy).export_path(fmt) and target.exists()
    record = json.loads((run_copy / "export" / f"{fmt}.json").read_text())
    parity = record["parity"]
    # The model exported is the calibrated one: its last layer the run's temperature, whose
    # probabilities the export must give (checked against Keras's on every test digit).
    from cnnkit.models.calibration import calibration_of

    fitted = Run(run_copy).meta()["calibration"]
    assert calibration_of(Run(run_copy).load_model()) == (fitted["scale"], fitted["bias"])
    # All 360 test digits, against Keras in float32 (the exported precision).
    assert parity["images"] == 360 and parity["source"] == "test split" and parity["passed"]
    assert parity["max_abs_difference"] <= 1e-4 and parity["top1_agreement_float32"] == 1.0
    assert parity["top1_agreement_run_model"] >= 0.99  # the run's model computes in bfloat16

    # Predicting through the export answers as predict through Keras does.
    files, keras = pictures
    other = json.loads(cli("predict", str(run_copy), *map(str, files), "--json",
                           "--engine", fmt).stdout)  # fmt: skip
    assert keras == [a["top"][0]["class"] for a in other]

    # An existing export is not replaced unless asked.
    before = target.stat().st_mtime_ns
    again = cli("export", str(run_copy), "--format", fmt)
    assert again.returncode == 2 and "--force" in again.stderr
    assert target.stat().st_mtime_ns == before
    if fmt == "onnx":  # (once: an export costs ~10 s)
        assert cli("export", str(run_copy), "--format", fmt, "--force").returncode == 0
        assert target.stat().st_mtime_ns != before


def test_export_errors_are_one_line(tmp_path: Path) -> None:
    from cnnkit.config import Config

    run = Run(tmp_path / "run")  # a finished run's files; nothing here reads its model
    run.path.mkdir()
    run.write_config(Config())
    run.update_meta(status="complete", classes=["a", "b"], input_shape=[8, 8, 1])
    run.model_path.write_bytes(b"PK")
    missing = cli("predict", str(run.path), "x.png", "--engine", "onnx")
    assert missing.returncode == 2 and f"cnnkit export {run.path} --format onnx" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    bad = cli("export", str(tmp_path), "--format", "onnx")
    assert bad.returncode == 2 and "not a cnnkit run" in bad.stderr


def test_every_format_of_the_table_is_written_and_run() -> None:
    from cnnkit import exporter

    assert set(exporter._WRITERS) == set(exporter._RUNTIMES) == set(EXPORT_FORMATS)
