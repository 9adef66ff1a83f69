"""Image folders: layouts, broken and odd files, label order, caches, streaming, and the CLI."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.config import AugmentConfig, DataConfig
from cnnkit.data import load_dataset
from cnnkit.data.augment import EpochAugmenter
from cnnkit.data.decoded import DiskImages, FileImages
from cnnkit.errors import DataError
from cnnkit.runs import Run
from conftest import cli, last_line, run_cli

COLOURS = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40)}
FORMATS = [("png", "RGB"), ("jpg", "RGB"), ("bmp", "RGB"), ("gif", "P"), ("webp", "RGBA")]


def _image(
    colour: tuple[int, int, int], size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    noise = rng.normal(0, 20, size=(size[1], size[0], 3))
    return np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)


def make_folder(root: Path, per_class: int = 20, seed: int = 0, extras: bool = True) -> Path:
    """Three colour classes in mixed formats, sizes and modes, plus everything that goes wrong:
    a corrupt file, a truncated PNG, a non-image, a hidden file, an empty class folder, a nested
    folder, a link loop, and a link to a folder outside."""
    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        folder = root / name
        (folder / "nested").mkdir(parents=True)
        for i in range(per_class):
            suffix, mode = FORMATS[i % len(FORMATS)]
            size = (int(rng.integers(24, 48)), int(rng.integers(24, 48)))
            image = Image.fromarray(_image(colour, size, rng))
            if mode == "P":
                image = image.convert("P")
            elif mode == "RGBA":
                image = image.convert("RGBA")
            target = folder / ("nested" if i % 7 == 0 else "") / f"{name}_{i}.{suffix}"
            image.save(target)
    if not extras:
        return root
    # A 16-bit grey PNG (a mode that must be scaled, not clipped).
    grey = (np.full((30, 30), 128, np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey).save(root / "blue" / "sixteen.png")
    (root / "red" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    good = (root / "green" / "green_5.png").read_bytes()
    (root / "green" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "green" / "notes.txt").write_text("not an image")
    (root / "green" / ".hidden.png").write_bytes(good)
    (root / "empty").mkdir()
    os.symlink(root, root / "red" / "nested" / "loop")
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir()
    Image.fromarray(_image((0, 0, 0), (32, 32), rng)).save(outside / "x.png")
    os.symlink(outside, root / "blue" / "elsewhere")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "photos")


def _load(path: Path, **values: object) -> object:
    cfg = DataConfig(name="folder", path=str(path), val_split=0.0, **values)  # type: ignore[arg-type]
    return load_dataset(cfg, seed=0)


def test_folder_classes_counts_and_skipped_files(folder: Path) -> None:
    data = _load(folder, image_size=32)
    assert data.class_names == ("blue", "green", "red")  # sorted; the empty class is left out
    assert data.input_shape == (32, 32, 3)
    total = len(data.train) + len(data.test)
    assert total == 3 * 20 + 1  # every image, nested ones and the 16-bit PNG included
    reasons = {Path(f).name: r for f, r in data.skipped}
    assert "corrupt.jpg" in reasons and "truncated.png" in reasons
    assert reasons["notes.txt"] == "not an image file (.txt)"
    assert reasons["empty"] == "no readable images; class left out"
    assert "outside" in reasons["elsewhere"]
    assert "already scanned" in reasons["loop"]
    assert ".hidden.png" not in reasons  # hidden files are ignored, not reported
    # Each class's images carry its colour: labels follow the folders.
    x = np.concatenate([data.train.x, data.test.x]).astype(float)
    y = np.concatenate([data.train.y, data.test.y])
    for index, name in enumerate(data.class_names):
        mean = x[y == index].mean(axis=(0, 1, 2))
        expected = np.array(COLOURS[name])
        assert np.argmax(mean) == np.argmax(expected) or name == "blue"  # blue has a grey image


def test_label_order_does_not_depend_on_what_is_added(folder: Path) -> None:
    first = _load(folder, image_size=16)
    (folder / "aardvark").mkdir()  # a new class sorts first: the others keep their order
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "aardvark" / "a.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "aardvark" / "b.png")
    again = _load(folder, image_size=16)
    assert first.class_names == ("blue", "green", "red")
    assert again.class_names == ("aardvark", "blue", "green", "red")
    assert np.array_equal(_load(folder, image_size=16).test.y, again.test.y)  # stable re-reads


def test_automatic_image_size_is_the_median_side(folder: Path) -> None:
    data = _load(folder)
    side = data.input_shape[0]
    assert 24 <= side <= 48 and data.notes["image_size"] == side


def test_cache_modes_give_the_same_images(folder: Path) -> None:
    memory = _load(folder, image_size=24, cache="memory")
    disk = _load(folder, image_size=24, cache="disk")
    none = _load(folder, image_size=24, cache="none")
    assert isinstance(disk.train.x, DiskImages) and isinstance(none.train.x, FileImages)
    for split in ("train", "test"):
        expected = getattr(memory, split).x
        assert np.array_equal(getattr(disk, split).x[np.arange(len(expected))], expected)
        assert np.array_equal(getattr(none, split).x[:], expected)
        assert np.array_equal(getattr(disk, split).y, getattr(memory, split).y)
    # The decoded copy is reused while the files are unchanged, and made anew when one changes.
    cache_file = disk.train.x.file
    stamp = cache_file.stat().st_mtime_ns
    assert _load(folder, image_size=24, cache="disk").train.x.file == cache_file
    assert cache_file.stat().st_mtime_ns == stamp
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(folder / "red" / "new.png")
    assert _load(folder, image_size=24, cache="disk").train.x.file != cache_file


def test_auto_cache_streams_what_does_not_fit(folder: Path) -> None:
    assert _load(folder, image_size=16, cache_mb=1).notes["cache"] == "memory"
    assert _load(folder, image_size=16, cache_mb=0).notes["cache"] == "disk"


def test_train_val_test_parts(tmp_path: Path) -> None:
    root = tmp_path / "parts"
    for part, n in (("train", 12), ("val", 4), ("test", 5)):
        make_folder(root / part, per_class=n, seed=n, extras=False)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "test" / "blue" / "extra.png")
    (root / "test" / "unknown").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "test" / "unknown" / "u.png")
    data = load_dataset(DataConfig(name="folder", path=str(root), image_size=16), seed=0)
    assert data.notes["layout"] == "parts"
    assert data.val is not None and len(data.val) == 3 * 4  # the val/ part, not a split
    assert len(data.test) == 3 * 5 + 1  # the unknown class is left out
    assert any("class not in the training part" in r for _, r in data.skipped)


def test_folder_errors_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        _load(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="no class folders"):
        _load(tmp_path / "flat")
    mixed = tmp_path / "mixed"
    (mixed / "train" / "a").mkdir(parents=True)
    (mixed / "cats").mkdir()
    with pytest.raises(DataError, match="beside other folders"):
        _load(mixed)
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(one / "only" / "a.png")
    with pytest.raises(DataError, match="at least two class folders"):
        _load(one)


def test_streamed_batches_equal_the_in_memory_augmentation(folder: Path) -> None:
    from cnnkit.trainer import Batches

    memory = _load(folder, image_size=20, cache="memory").train
    disk = _load(folder, image_size=20, cache="disk").train
    cfg = AugmentConfig(rotation=0, shift=0, translate=2, alternate_flip=True)
    whole = EpochAugmenter(memory.x, cfg, seed=5)(epoch=3)
    order = np.random.default_rng(0).permutation(len(memory))
    y = np.eye(3, dtype=np.float32)[disk.y]
    batches = Batches(disk.x, y, order, 16, EpochAugmenter(disk.x, cfg, seed=5), epoch=3)
    got = np.concatenate([batches[i][0] for i in range(len(batches))])
    assert np.array_equal(got, whole[order])
    assert np.array_equal(np.concatenate([batches[i][1] for i in range(len(batches))]), y[order])


@pytest.mark.slow
def test_train_on_a_folder_then_predict_its_files(folder: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    trained = cli(
        "train", "--preset", "seed", "--runs-dir", str(runs), "data.name=folder",
        f"data.path={folder}", "data.image_size=24", "data.val_split=0.2", "data.cache=disk",
        "train.epochs=6", "train.learning_rate=2e-3", "train.batch_size=16",
        "train.class_weight=balanced", "augment.enabled=false",
    )  # fmt: skip
    run = last_line(trained)
    meta = Run(run).meta()
    assert meta["classes"] == ["blue", "green", "red"] and meta["dataset"]["cache"] == "disk"
    with (run / "skipped_files.csv").open() as f:
        listed = {Path(row["file"]).name: row["reason"] for row in csv.DictReader(f)}
    assert {"corrupt.jpg", "truncated.png", "notes.txt", "empty"} <= set(listed)
    assert "left out" in trained.stdout
    files = sorted(folder.glob("*/*_1*.*"))  # some of every class, any format
    predicted = cli("predict", str(run), *map(str, files), str(folder / "red" / "corrupt.jpg"),
                    "--json", "--top-k", "1")  # fmt: skip
    assert predicted.returncode == 2  # one unreadable file among them: reported, rest answered
    assert "corrupt.jpg" in predicted.stderr
    answers = json.loads(predicted.stdout)
    assert len(answers) == len(files)
    right = sum(Path(a["image"]).parent.name == a["top"][0]["class"] for a in answers)
    assert right / len(answers) >= 0.8, answers


def test_data_inspect(folder: Path, tmp_path: Path) -> None:
    (folder.parent / "split").mkdir()
    for part in ("train", "test"):
        (folder.parent / "split" / part / "a").mkdir(parents=True)
        (folder.parent / "split" / part / "b").mkdir(parents=True)
    same = folder / "red" / "red_1.jpg"
    for part in ("train", "test"):
        (folder.parent / "split" / part / "a" / "same.jpg").write_bytes(same.read_bytes())
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(folder.parent / "split/train/b/x.png")
    grid = tmp_path / "grid.png"
    done = run_cli("data", "inspect", str(folder), "--grid", str(grid), "--json")  # a real process
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["classes"] == ["blue", "empty", "green", "red"]
    assert report["counts"]["train"]["red"] == 20 and report["counts"]["train"]["empty"] == 0
    assert report["imbalance"] is None  # a class without images
    assert {Path(p).name for p, _ in report["unreadable"]} == {"corrupt.jpg", "truncated.png"}
    assert grid.stat().st_size > 10_000
    again = cli("data", "inspect", str(folder), "--grid", str(grid))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    split = cli("data", "inspect", str(folder.parent / "split"), cwd=tmp_path)
    assert split.returncode == 0, split.stderr
    assert "1 groups of identical files across parts" in split.stdout
    assert (tmp_path / "split-samples.png").is_file()


# Every cache mode trains the same network the same way (deterministic, so that the disk run is
# also the uninterrupted reference of the resume test below).
CACHE_RUN = [
    "data.name=folder", "data.image_size=16", "train.epochs=2", "train.batch_size=8",
    "train.tta=0", "train.precision=fp32", "model.params.widths=[8,16,16]",
    "train.deterministic=true",
]  # fmt: skip


@pytest.fixture(scope="module")
def cache_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Run]]:
    from cnnkit.config import load_config
    from cnnkit.workflow import train

    root = tmp_path_factory.mktemp("cache-modes")
    folder = make_folder(root / "photos")
    runs = {}
    for mode in ("memory", "disk", "none"):
        overrides = [*CACHE_RUN, f"data.path={folder}", f"data.cache={mode}", f"name={mode}"]
        runs[mode] = train(load_config("fast", overrides=overrides), root / "runs", verbose=0)
    return folder, runs


@pytest.mark.slow
def test_every_cache_mode_trains_the_same_model(cache_runs: tuple[Path, dict[str, Run]]) -> None:
    """Streamed batches (disk, none) follow the same order and augmentation as in-memory
    training: the same seed gives the same weights whatever data.cache says."""
    _, runs = cache_runs
    weights = {mode: run.load_model().get_weights() for mode, run in runs.items()}
    for mode, run in runs.items():
        # The report reads its galleries from the streamed test images too.
        drawn = {p.stem for p in run.figures.glob("*.png")}
        assert {"random_predictions", "gradcam", "reliability"} <= drawn, (mode, drawn)
        assert run.meta()["dataset"]["cache"] == mode
    for mode in ("disk", "none"):
        for a, b in zip(weights["memory"], weights[mode], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_streamed_run_stopped_mid_epoch_resumes_exactly(
    cache_runs: tuple[Path, dict[str, Run]], tmp_path: Path
) -> None:
    import signal

    import keras

    from cnnkit.config import load_config
    from cnnkit.errors import TrainingInterrupted
    from cnnkit.workflow import resume, train

    folder, runs = cache_runs
    reference = runs["disk"]
    overrides = [*CACHE_RUN, f"data.path={folder}", "data.cache=disk", "name=cut"]
    config = load_config("fast", overrides=overrides)

    class CtrlC(keras.callbacks.Callback):  # type: ignore[misc]
        steps = 0

        def on_train_batch_end(self, batch: int, logs: object = None) -> None:
            CtrlC.steps += 1
            if CtrlC.steps == 8:  # in the second epoch: Ctrl-C, as a user would
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        train(config, tmp_path / "runs", verbose=0, callbacks=[CtrlC()])
    cut = Run(tmp_path / "runs" / "cut")
    assert cut.meta()["status"] == "interrupted"
    resume(cut, verbose=0)
    expected = reference.load_model().get_weights()
    for a, b in zip(expected, cut.load_model().get_weights(), strict=True):
        assert np.array_equal(a, b)
