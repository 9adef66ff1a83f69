"""cnnkit.predictor: `cnnkit predict` at scale (folders, globs, formats, broken files mixed in,
many images) and test-time augmentation, which averages the logits."""

from __future__ import annotations

import csv
import inspect
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.env import import_keras
from cnnkit.predictor import expand_paths
from conftest import cli

keras = import_keras()


def _digit_folder(root: Path, count: int) -> dict[str, int]:
    """Test digits saved as PNG/JPEG/BMP/16-bit PNG/RGBA in nested folders; path -> label."""
    from cnnkit.config import DataConfig
    from cnnkit.data import load_dataset

    test = load_dataset(DataConfig(name="digits"), seed=0).test
    labels = {}
    for i in range(count):
        grey = Image.fromarray(test.x[i, :, :, 0]).resize((48, 48), Image.Resampling.NEAREST)
        folder = root / f"part{i % 3}" / ("deep" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        kind = i % 5
        if kind == 0:
            path = folder / f"d{i}.png"
            grey.save(path)
        elif kind == 1:
            path = folder / f"d{i}.bmp"
            grey.convert("RGB").save(path)
        elif kind == 2:
            path = folder / f"d{i}.png"  # 16-bit grey: scaled down, not clipped
            Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257).save(path)
        elif kind == 3:
            path = folder / f"d{i}.png"  # RGBA, opaque
            grey.convert("RGBA").save(path)
        else:
            path = folder / f"d{i}.tif"
            grey.save(path)
        labels[str(path)] = int(test.y[i])
    return labels


def test_expand_paths_folders_globs_and_misses(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ("a/1.png", "a/b/2.JPG", "a/notes.txt", ".hidden/3.png", "a/b/.4.png"):
        (tmp_path / name).write_bytes(b"x")
    files, errors = expand_paths([str(tmp_path), str(tmp_path / "a" / "*.png"),
                                  str(tmp_path / "none*.png"), str(tmp_path / "missing.png")])  # fmt: skip
    assert files == [tmp_path / "a/1.png", tmp_path / "a/b/2.JPG", tmp_path / "a/1.png",
                     tmp_path / "missing.png"]  # fmt: skip
    assert len(errors) == 1 and "no files match" in str(errors[0])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no image files" in str(expand_paths([str(empty)])[1][0])


@pytest.mark.slow
def test_predict_a_folder_with_broken_files_in_every_format(
    digits_run: Path, tmp_path: Path
) -> None:
    labels = _digit_folder(tmp_path / "photos", 150)
    broken = tmp_path / "photos" / "part1" / "truncated.png"
    good = next(p for p in labels if p.endswith(".png"))
    broken.write_bytes(Path(good).read_bytes()[:40])
    (tmp_path / "photos" / "part2" / "empty.jpg").write_bytes(b"")
    (tmp_path / "photos" / "README.md").write_text("not an image, and not an image suffix")
    result = cli("predict", str(digits_run), str(tmp_path / "photos"), "--format", "csv",
                 "--top-k", "2", "--batch-size", "64")  # fmt: skip
    assert result.returncode == 2  # some files could not be read ...
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 150  # ... and every other one was answered
    assert list(rows[0]) == ["image", "class_1", "probability_1", "class_2", "probability_2"]
    right = np.mean([int(r["class_1"]) == labels[r["image"]] for r in rows])
    assert right >= 0.85, right  # the run reaches ~96 % on these test digits
    errors = [line for line in result.stderr.splitlines() if line.startswith("cnnkit: error: ")]
    assert len(errors) == 2 and "truncated.png" in result.stderr and "empty.jpg" in result.stderr
    assert "150 images answered, 2 not" in result.stderr

    # The same answers as JSON lines, for a glob; and in one JSON array.
    lines = cli("predict", str(digits_run), str(tmp_path / "photos" / "**" / "d1*.png"),
                "--format", "jsonl")  # fmt: skip
    answers = [json.loads(line) for line in lines.stdout.splitlines()]
    assert answers and all(Path(a["image"]).name.startswith("d1") for a in answers)
    by_image = {r["image"]: r["class_1"] for r in rows}
    assert all(a["top"][0]["class"] == by_image[a["image"]] for a in answers)


def test_tta_levels_average_the_logits() -> None:
    from cnnkit.predictor import predict_probabilities

    dense = keras.layers.Dense(3)  # on pixels / 255: logits of a few units, a soft softmax
    scaled = [keras.Input((6, 6, 1)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten()]
    model = keras.Sequential([*scaled, dense, keras.layers.Softmax()])
    logits_of = keras.Sequential([*scaled, dense])
    x = np.random.default_rng(0).integers(0, 256, size=(4, 6, 6, 1)).astype("uint8")

    def logits(images: np.ndarray) -> np.ndarray:
        return np.asarray(logits_of.predict(images, verbose=0), dtype=np.float64)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    plain = model.predict(x, verbose=0)
    np.testing.assert_allclose(predict_probabilities(model, x, 2, tta=0), plain, rtol=1e-6)
    mirror = 0.5 * (logits(x) + logits(x[:, :, ::-1]))
    level1 = predict_probabilities(model, x, 2, tta=1)
    np.testing.assert_allclose(level1, softmax(mirror), rtol=1e-4, atol=1e-6)
    # Not the average of the probabilities (which was the rule before).
    averaged = 0.5 * (plain + model.predict(x[:, :, ::-1], verbose=0))
    assert not np.allclose(level1, averaged, rtol=1e-3)
    symmetric = np.concatenate([x[:, :, :3], x[:, :, :3][:, :, ::-1]], axis=2)  # its own mirror
    np.testing.assert_allclose(
        predict_probabilities(model, symmetric, 2, tta=1),
        model.predict(symmetric, verbose=0),
        rtol=1e-4,
    )
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    up_left, down_right = padded[:, 0:6, 0:6], padded[:, 2:8, 2:8]
    shifts = 0.5 * (logits(up_left) + logits(up_left[:, :, ::-1]))
    shifts += 0.5 * (logits(down_right) + logits(down_right[:, :, ::-1]))
    level2 = predict_probabilities(model, x, 2, tta=2)
    np.testing.assert_allclose(level2, softmax(0.5 * mirror + 0.25 * shifts), rtol=1e-4, atol=1e-6)


def test_the_command_the_api_and_the_service_list_the_same_classes_by_default() -> None:
    import argparse

    from cnnkit.cli import build_parser
    from cnnkit.predictor import TOP_K, Predictor, answer, predict

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert verbs.choices["predict"].get_default("top_k") == TOP_K
    for function in (answer, predict, Predictor.predict):
        assert inspect.signature(function).parameters["top_k"].default == TOP_K
