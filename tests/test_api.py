"""The Python API mirrors the verbs: one documented function per verb, each returning what the
command prints (cnnkit.train(config), cnnkit.evaluate(run), cnnkit.report(run), ...)."""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnkit
from cnnkit.runs import Run
from conftest import REPO


@pytest.mark.slow
def test_train_evaluate_predict_in_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    config = cnnkit.load_config("smoke", overrides=["data.name=synthetic", "train.epochs=2"])
    with caplog.at_level(logging.INFO, logger="cnnkit"):
        run = cnnkit.train(config, runs_dir=tmp_path, verbose=0)
    assert run.complete and run.path == tmp_path / "smoke"
    # Library code logs what it does (the caller chooses what to show) and prints nothing.
    assert any(r.getMessage().startswith("test accuracy") for r in caplog.records)
    assert "cnnkit:" not in capsys.readouterr().out
    result = cnnkit.evaluate(run)
    saved = run.metrics()["test"]
    assert result.accuracy == saved["accuracy"] and result.accuracy > 0.9  # colours are easy
    predictor = cnnkit.Predictor(run.path)
    assert predictor.class_names == ["red", "green", "blue", "grey"]
    red = tmp_path / "red.jpg"
    Image.new("RGB", (300, 200), (210, 30, 35)).save(red)
    predictions, errors = predictor.predict([red], top_k=4)
    assert not errors and predictions[0].top[0][0] == "red"
    assert np.isclose(sum(p for _, p in predictions[0].top), 1.0, atol=1e-4)
    # cnnkit.predict: folders and missing files, as `cnnkit predict` takes them.
    (tmp_path / "photos").mkdir()
    shutil.copy(red, tmp_path / "photos" / "also-red.jpg")
    found, missing = cnnkit.predict(run, [tmp_path / "photos", tmp_path / "nope.png"], top_k=1)
    assert [p.top[0][0] for p in found] == ["red"] and "nope.png" in str(missing[0])


@pytest.mark.slow
def test_report_and_compare_from_the_api(digits_run: Path, tmp_path: Path) -> None:
    run = Run(tmp_path / "digits")
    shutil.copytree(digits_run, run.path)
    written = cnnkit.report(run)
    assert written.path == run.report_path and len(written.figures) == 11
    comparison = cnnkit.compare([digits_run, run.path], out=tmp_path / "cmp")
    assert comparison.folder == tmp_path / "cmp"
    # Runs of the same name are told apart by their folder.
    labels = [r.label for r in comparison.runs]
    assert labels == [f"{digits_run.parent.name}/digits", f"{tmp_path.name}/digits"]
    assert comparison.differences == {}  # the same run twice
    assert (tmp_path / "cmp" / "compare.html").is_file()


def test_every_verb_wraps_a_documented_api_function() -> None:
    # The verbs come from the command's own table, so that a new verb cannot be missed.
    from cnnkit.cli import VERBS

    for verb, names in VERBS.items():
        source = (REPO / "src" / "cnnkit" / "cli" / f"{verb}.py").read_text(encoding="utf-8")
        imported = {
            alias.name
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cnnkit")
            for alias in node.names
        }
        assert imported & set(names), f"cnnkit {verb} calls none of {names}"
        for name in names:
            assert name in cnnkit.__all__, f"{verb}: cnnkit.{name} is not in the API"
            function = getattr(cnnkit, name)
            assert callable(function), verb
            assert (inspect.getdoc(function) or "").strip(), f"{verb}: {name} has no docstring"
    for name in cnnkit.__all__:  # every public name resolves, and is not shadowed by a module
        value = getattr(cnnkit, name)
        assert not inspect.ismodule(value), name


def test_lazy_api_names() -> None:
    assert callable(cnnkit.train) and callable(cnnkit.evaluate)
    assert "seed_cnn" in cnnkit.list_models()
    assert set(cnnkit.list_datasets()) >= {"cifar10", "digits", "synthetic"}
    with pytest.raises(AttributeError):
        cnnkit.nonexistent  # noqa: B018
    importlib.import_module("cnnkit.reporter")  # a module of the same concern as a verb...
    assert callable(cnnkit.report) and not inspect.ismodule(cnnkit.report)  # ...hides nothing
