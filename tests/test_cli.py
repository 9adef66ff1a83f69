"""Each verb end to end, and each kind of bad input. Every verb runs at least once as a real
process (``run_cli``: start-up, streams, exit status as a shell sees them); the rest goes through
the same entry point in this process (``cli``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnkit.runs import Run
from conftest import Result, cli, last_line, run_cli, write_cifar_archive


def _one_line_error(result: Result | subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("cnnkit: error: ")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def test_help_answers_without_tensorflow() -> None:
    probe = (
        "import sys\nfrom cnnkit.cli import build_parser\nbuild_parser().format_help()\n"
        "print([m for m in ('tensorflow', 'keras', 'sklearn', 'matplotlib', 'fastapi', 'onnxruntime')"
        " if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
    result = run_cli("--help")
    assert result.returncode == 0
    for verb in ("train", "evaluate", "report", "compare", "predict", "serve", "export", "data",
                 "models", "config", "env"):  # fmt: skip
        assert verb in result.stdout


def test_usage_error_exits_2() -> None:
    assert run_cli("train", "--preset", "nope").returncode == 2
    assert cli("frobnicate").returncode == 2


def test_config_verb_shows_the_resolved_config(tmp_path: Path) -> None:
    result = run_cli("config", "--preset", "smoke", "train.epochs=4")
    assert result.returncode == 0
    cfg = yaml.safe_load(result.stdout)
    assert cfg["train"]["epochs"] == 4 and cfg["data"]["train_subset"] == 2000
    assert "seed" in run_cli("config", "--presets").stdout
    # key=value on both sides of an option: argparse alone would reject the second one.
    mixed = yaml.safe_load(
        run_cli("config", "train.epochs=4", "--preset", "smoke", "seed=3").stdout
    )
    assert (mixed["train"]["epochs"], mixed["seed"], mixed["name"]) == (4, 3, "smoke")
    _one_line_error(cli("config", "train.epoch=4"), "did you mean 'train.epochs'")


def test_models_and_env_verbs() -> None:
    models = cli("models")
    assert models.returncode == 0 and "seed_cnn" in models.stdout and "1,341,226" in models.stdout
    env = run_cli("env", "--json")
    assert env.returncode == 0
    info = json.loads(env.stdout)
    assert info["backend"] == "tensorflow" and info["precision_auto"] in (
        "mixed_bfloat16",
        "float32",
    )


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


@pytest.mark.slow
def test_evaluate_reproduces_the_saved_metrics(digits_run: Path) -> None:
    result = run_cli("evaluate", str(digits_run), "--json")
    assert result.returncode == 0, result.stderr
    again = json.loads(result.stdout)
    saved = Run(digits_run).metrics()["test"]
    assert again["confusion"] == saved["confusion"]
    assert again["accuracy"] == saved["accuracy"]
    table = cli("evaluate", str(digits_run))
    assert "test accuracy" in table.stdout and "precision" in table.stdout
    _one_line_error(cli("evaluate", str(digits_run), "train.epochs=3"), "data.* overrides only")


def _digit_pngs(tmp_path: Path, count: int) -> tuple[list[Path], np.ndarray]:
    from cnnkit.config import DataConfig
    from cnnkit.data import load_dataset

    test = load_dataset(DataConfig(name="digits"), seed=0).test
    paths = []
    for i in range(count):
        # Saved large and in RGB: predict must convert and resize them to 8x8 grey.
        image = Image.fromarray(test.x[i, :, :, 0]).resize((64, 64), Image.Resampling.NEAREST)
        paths.append(tmp_path / f"digit_{i}.png")
        image.convert("RGB").save(paths[-1])
    return paths, test.y[:count]


@pytest.mark.slow
def test_predict_table_and_json(digits_run: Path, tmp_path: Path) -> None:
    paths, labels = _digit_pngs(tmp_path, 12)
    result = run_cli("predict", str(digits_run), *map(str, paths), "--top-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert [a["image"] for a in answers] == [str(p) for p in paths]
    for answer in answers:
        probs = [t["probability"] for t in answer["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-5
    predicted = [int(a["top"][0]["class"]) for a in answers]
    assert np.mean(np.array(predicted) == labels) >= 0.75
    table = cli("predict", str(digits_run), str(paths[0]), "--top-k", "2")
    assert table.returncode == 0 and table.stdout.count("0.") >= 2


@pytest.mark.slow
def test_bad_images_are_reported_and_the_rest_answered(digits_run: Path, tmp_path: Path) -> None:
    paths, _ = _digit_pngs(tmp_path, 2)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    result = cli("predict", str(digits_run), str(paths[0]), str(text), str(paths[1]), "--json")
    assert len(json.loads(result.stdout)) == 2
    _one_line_error(result, "notes.txt", "not an image")


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
    # (train as a real process: test_resume.py's twin and kills)
    first = cli(*args)
    assert last_line(first) == runs / "same"
    before = files_snapshot(runs / "same")
    second = cli(*args)
    assert last_line(second) == runs / "same-2"
    assert files_snapshot(runs / "same") == before


@pytest.mark.slow
def test_cifar_archive_in_the_official_format_trains(tmp_path: Path) -> None:
    archive = write_cifar_archive(
        tmp_path / "cifar-10-python.tar.gz", __import__("conftest").cifar_members()
    )
    result = cli(
        "train",
        "--runs-dir",
        str(tmp_path / "runs"),
        f"data.path={archive}",
        "train.epochs=1",
        "train.batch_size=64",
        "report.enabled=false",
    )
    run = last_line(result)
    assert run.name == "fast"  # the default preset
    meta = Run(run).meta()
    # fast: no validation split, so 5 % (here the minimum, one image a class) calibrates.
    assert meta["dataset"]["test"] == 30 and meta["dataset"]["val"] == 0
    assert meta["dataset"]["train"] == 140 and meta["dataset"]["calibration"] == 10
    assert meta["model"] == "fast_cnn"
