"""Hugging Face datasets saved to disk (save_to_disk folders and folders of Parquet files): their
own splits, class names and order, images named by split and row, and refusals in one line.
The datasets are made here with the library and saved to disk: no download, ever."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.config import load_config
from cnnkit.data import load_dataset
from conftest import cli

datasets = pytest.importorskip("datasets")

# Not in sorted order, so that keeping the dataset's own order shows.
NAMES = ["zebra", "apple", "mango"]
COLOURS = [(40, 60, 200), (40, 180, 60), (200, 40, 40)]


def _split(count: int, seed: int, unlabelled: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(count):
        label = i % len(NAMES)
        pixels = np.clip(np.array(COLOURS[label]) + rng.normal(0, 25, (10, 14, 3)), 0, 255)
        images.append(Image.fromarray(pixels.astype(np.uint8)))
        labels.append(-1 if i < unlabelled else label)
    features = datasets.Features(
        {"picture": datasets.Image(), "fruit": datasets.ClassLabel(names=NAMES),
         "caption": datasets.Value("string")}
    )  # fmt: skip
    return datasets.Dataset.from_dict(
        {"picture": images, "fruit": labels, "caption": [""] * count}, features=features
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf")
    whole = datasets.DatasetDict(
        {"train": _split(45, 0), "validation": _split(12, 1), "test": _split(15, 2, unlabelled=3),
         "extra": _split(3, 3)}
    )  # fmt: skip
    whole.save_to_disk(str(root / "saved"))
    for name in ("train", "test"):
        whole[name].to_parquet(str(root / "parquet" / "data" / f"{name}-00000-of-00001.parquet"))
    return root


def _load(path: Path, *overrides: str):  # type: ignore[no-untyped-def]
    config = load_config("smoke", overrides=["data.name=hf", f"data.path={path}", *overrides])
    return load_dataset(config.data, seed=0)


def test_a_saved_dataset_keeps_its_splits_classes_and_order(saved: Path) -> None:
    loaded = _load(saved / "saved", "data.image_size=12")
    assert loaded.class_names == tuple(NAMES)  # the ClassLabel's order, not sorted
    assert (len(loaded.train), len(loaded.val), len(loaded.test)) == (45, 12, 12)  # 3 unlabelled
    assert loaded.summary()["hf_splits_left_out"] == ["extra"]
    assert loaded.test.files[0] == "test[3]" and loaded.train.files[4] == "train[4]"
    assert loaded.input_shape == (12, 12, 3)
    # The colours come through as the labels say.
    red = loaded.train.x[loaded.train.y == NAMES.index("mango")].mean(axis=(0, 1, 2))
    assert red[0] > 150 and red[1] < 100


def test_a_folder_of_parquet_files_is_read_like_the_saved_one(saved: Path) -> None:
    saved_one = _load(saved / "saved", "data.image_size=12", "data.cache=disk")
    parquet = _load(saved / "parquet", "data.image_size=12", "data.cache=none")
    assert parquet.class_names == saved_one.class_names
    assert np.array_equal(parquet.test.x[:], saved_one.test.x[:])
    assert np.array_equal(parquet.test.y, saved_one.test.y)


def test_what_cannot_be_trained_on_is_one_line(saved: Path, tmp_path: Path) -> None:
    several = datasets.Dataset.from_dict(
        {"picture": [Image.new("RGB", (4, 4))] * 4, "tags": [[0, 1], [1], [0], [1]]},
        features=datasets.Features({"picture": datasets.Image(),
                                    "tags": datasets.Sequence(datasets.ClassLabel(names=NAMES))}),
    )  # fmt: skip
    several.save_to_disk(str(tmp_path / "several"))
    no_image = datasets.Dataset.from_dict({"fruit": [0, 1]})
    no_image.save_to_disk(str(tmp_path / "no-image"))
    datasets.DatasetDict({"test": _split(6, 0)}).save_to_disk(str(tmp_path / "no-train"))
    (tmp_path / "empty").mkdir()
    cases = {
        "several": "several labels per image",
        "no-image": "has no Image feature",
        "no-train": "has no train split",
        "empty": "is not a saved Hugging Face dataset",
        "gone": "is not a folder",
    }
    for name, message in cases.items():
        done = cli("train", "--preset", "smoke", "data.name=hf", f"data.path={tmp_path / name}")
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], (name, lines)
    wrong = cli("train", "--preset", "smoke", "data.name=hf", f"data.path={saved / 'saved'}",
                "data.label_column=kind")  # fmt: skip
    assert wrong.returncode == 2 and "no column 'kind'" in wrong.stderr
