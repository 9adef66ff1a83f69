"""The Python API mirrors the verbs: cnnkit.train(config), cnnkit.evaluate(run), Predictor(run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnkit


@pytest.mark.slow
def test_train_evaluate_predict_in_process(tmp_path: Path) -> None:
    config = cnnkit.load_config("smoke", overrides=["data.name=synthetic", "train.epochs=2"])
    run = cnnkit.train(config, runs_dir=tmp_path, verbose=0)
    assert run.complete and run.path == tmp_path / "smoke"
    result = cnnkit.evaluate(run)
    saved = json.loads(run.file("metrics.json").read_text())["test"]
    assert result.accuracy == saved["accuracy"] and result.accuracy > 0.9  # colours are easy
    predictor = cnnkit.Predictor(run.path)
    assert predictor.class_names == ["red", "green", "blue", "grey"]
    red = tmp_path / "red.jpg"
    Image.new("RGB", (300, 200), (210, 30, 35)).save(red)
    predictions, errors = predictor.predict([red], top_k=4)
    assert not errors and predictions[0].top[0][0] == "red"
    assert np.isclose(sum(p for _, p in predictions[0].top), 1.0, atol=1e-4)


def test_lazy_api_names() -> None:
    assert callable(cnnkit.train) and callable(cnnkit.evaluate)
    assert "seed_cnn" in cnnkit.list_models()
    assert set(cnnkit.list_datasets()) >= {"cifar10", "digits", "synthetic"}
    with pytest.raises(AttributeError):
        cnnkit.nonexistent  # noqa: B018
