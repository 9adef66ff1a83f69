"""cnnkit.runs: the run folder train leaves, what is refused as one, and runs never overwritten
or touched by a later, failing train."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cnnkit.runs import Run
from conftest import cli, last_line
from test_cli import _one_line_error


@pytest.mark.slow
def test_train_leaves_a_complete_run_folder(digits_run: Path) -> None:
    expected = {  # the layout README.md documents, spelled out: it must not drift
        "run.json",
        "config.yaml",
        "env.json",
        "model.keras",
        "checkpoints/best.keras",
        "checkpoints/last.keras",
        "history.csv",
        "metrics.json",
        "classification_report.txt",
        "model_summary.txt",
        "predictions.npz",
        "report.html",
        "report.json",
        *(f"figures/{name}.png" for name in (
            "accuracy", "loss", "per_class", "confusion_matrix", "confusion_matrix_normalized",
            "confused_pairs", "most_confident_mistakes", "random_predictions", "reliability",
            "coverage", "gradcam",
        )),
    }  # fmt: skip
    present = {str(p.relative_to(digits_run)) for p in digits_run.rglob("*") if p.is_file()}
    assert expected <= present
    run = Run(digits_run)
    meta = run.meta()
    assert meta["status"] == "complete" and meta["epochs"] == 15
    assert meta["classes"] == [str(d) for d in range(10)] and meta["input_shape"] == [8, 8, 1]
    assert meta["precision"] in ("mixed_bfloat16", "float32")
    metrics = run.metrics()["test"]
    assert metrics["accuracy"] > 0.8  # it really learned: chance is 0.1
    assert sum(map(sum, metrics["confusion"])) == metrics["num_images"] == 360
    history = run.history()
    assert history["epoch"] == list(range(15)) and len(history["val_accuracy"]) == 15
    assert run.config().data.name == "digits"
    assert "seed_cnn" in run.file("model_summary.txt").read_text()


def test_not_a_run_folder(tmp_path: Path) -> None:
    _one_line_error(cli("evaluate", str(tmp_path)), "not a cnnkit run")
    _one_line_error(cli("predict", str(tmp_path / "nope"), "x.png"), "not a folder")


@pytest.mark.slow
def test_damaged_model_file_is_refused(digits_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(digits_run, copy)
    Run(copy).model_path.write_bytes(b"PK\x03\x04 garbage")
    _one_line_error(cli("evaluate", str(copy)), "not a loadable Keras model")


def test_bad_training_input_leaves_earlier_runs_untouched(
    tmp_path: Path, files_snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    runs = tmp_path / "runs"
    (runs / "smoke").mkdir(parents=True)
    Run(runs / "smoke").update_meta(status="complete")
    Run(runs / "smoke").model_path.write_bytes(b"precious")
    before = files_snapshot(runs)
    bad_archive = tmp_path / "cifar-10-python.tar.gz"
    bad_archive.write_bytes(b"\x1f\x8b\x08garbage")
    cases = [
        (["train.epoch=3"], ["did you mean 'train.epochs'"]),
        (["data.name=digitz"], ["did you mean 'digits'"]),
        (["model.params.dens=3"], ["did you mean 'dense'"]),
        ([], ["CIFAR-10 not found", "data.path=", "CNNKIT_DATA_DIR"]),  # no data, no network
        ([f"data.path={bad_archive}"], ["not a readable CIFAR-10 archive"]),
        ([f"data.path={tmp_path / 'missing'}"], ["holds no cifar-10-python.tar.gz"]),
    ]
    for overrides, needles in cases:
        result = cli("train", "--preset", "smoke", "--runs-dir", str(runs), *overrides)
        _one_line_error(result, *needles)
    assert files_snapshot(runs) == before
    assert sorted(p.name for p in runs.iterdir()) == ["smoke"]


@pytest.mark.slow
def test_a_second_run_never_overwrites_the_first(
    tmp_path: Path, files_snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    runs = tmp_path / "runs"
    args = [
        "train",
        "--preset",
        "smoke",
        "--runs-dir",
        str(runs),
        "data.name=synthetic",
        "train.epochs=1",
        "name=same",
        "report.enabled=false",
    ]
    # (train as a real process: test_checkpoint.py's twin and kills)
    first = cli(*args)
    assert last_line(first) == runs / "same"
    before = files_snapshot(runs / "same")
    second = cli(*args)
    assert last_line(second) == runs / "same-2"
    assert files_snapshot(runs / "same") == before
