"""The command line: help, usage errors, the config, models and env verbs, evaluate and predict
end to end, and each kind of bad input. A verb runs here as a real process (``run_cli``:
start-up, streams, exit status as a shell sees them) where that matters; the rest goes through
the same entry point in this process (``cli``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnkit.runs import Run
from conftest import Result, cli, run_cli


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
    from cnnkit.cli import VERBS

    listed = result.stdout.split("positional arguments:")[1]
    for verb in VERBS:
        assert f"    {verb} " in listed or f"    {verb}\n" in listed, verb


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
