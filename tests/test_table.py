"""Label tables: CSV, Parquet and DataFrames; the path rule, skipped rows, bad tables in one line,
bounded memory; and a run trained on a DataFrame that names its files (files.csv, the report's
mistakes, evaluate --errors)."""

from __future__ import annotations

import csv
import json
import logging
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.config import DataConfig, load_config
from cnnkit.data import load_dataset
from cnnkit.errors import DataError
from conftest import cli

COLOURS = {"blue": (40, 60, 200), "green": (40, 180, 60), "red": (200, 40, 40)}


def make_images(root: Path, per_class: int = 24, seed: int = 0) -> list[tuple[str, str, str]]:
    """Colour images (of several sizes, not square) under root/img/; (path, label, split) rows
    with paths relative to root, every fifth image in the test part."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    rows = []
    for name, colour in COLOURS.items():
        for i in range(per_class):
            h, w = int(rng.integers(10, 16)), int(rng.integers(14, 22))
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (h, w, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / "img" / f"{name}{i}.png")
            rows.append((f"img/{name}{i}.png", name, "test" if i % 5 == 0 else "train"))
    return rows


def write_csv(path: Path, header: list[str], rows: list[tuple[str, ...]], sep: str = ",") -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter=sep)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def count(loaded: object) -> int:
    parts = (loaded.train, loaded.val, loaded.test)  # type: ignore[attr-defined]
    return sum(len(part) for part in parts if part is not None)


def data(path: Path, *overrides: str) -> DataConfig:
    return load_config("smoke", overrides=["data.name=table", f"data.path={path}", *overrides]).data


@pytest.fixture
def table(tmp_path: Path) -> tuple[Path, list[tuple[str, str, str]]]:
    rows = make_images(tmp_path)
    return tmp_path, rows


def test_csv_and_parquet_read_the_same_images(table: tuple[Path, list]) -> None:
    pd = pytest.importorskip("pandas")
    root, rows = table
    frame = pd.DataFrame(rows, columns=["filename", "class", "split"])
    frame.to_parquet(root / "labels.parquet")
    write_csv(root / "labels.csv", ["filename", "class", "split"], rows)
    write_csv(root / "semi.csv", ["filename", "class", "split"], rows, sep=";")
    loaded = {
        name: load_dataset(data(root / name, "data.image_size=12"), seed=0)
        for name in ("labels.csv", "labels.parquet", "semi.csv")
    }
    loaded["frame"] = load_dataset(
        data(root / "unused", "data.image_size=12"), seed=0, frame=frame.assign(
            filename=[str(root / p) for p in frame["filename"]])
    )  # fmt: skip
    first = loaded["labels.csv"]
    assert first.class_names == ("blue", "green", "red")
    # The split column decides the test part: every fifth image of each class.
    assert len(first.test) == 15 and all(int(Path(f).stem[-1]) % 5 == 0 for f in first.test.files)
    assert first.summary()["split_column"] == "split" and first.input_shape == (12, 12, 3)
    for name, other in loaded.items():
        assert other.class_names == first.class_names, name
        assert np.array_equal(other.train.x, first.train.x), name
        assert np.array_equal(other.test.y, first.test.y), name
        assert [Path(f).name for f in other.test.files] == [
            Path(f).name for f in first.test.files
        ], name


def test_rows_that_cannot_be_used_are_skipped_and_listed(table: tuple[Path, list]) -> None:
    root, rows = table
    outside = root.parent / f"{root.name}-outside.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(outside)
    (root / "img" / "link.png").symlink_to(outside)
    (root / "img" / "broken.png").write_bytes(b"not a png")
    extra = [
        ("img/missing.png", "red", "train"),
        (rows[1][0], "green", "train"),  # listed again, with another label
        (f"../{outside.name}", "red", "train"),
        (str(outside), "red", "train"),
        ("img/link.png", "red", "train"),
        ("", "red", "train"),
        ("img/red3.png", "", "train"),
        ("img/broken.png", "red", "train"),
    ]
    path = write_csv(root / "labels.csv", ["path", "label", "split"], rows + extra)
    loaded = load_dataset(data(path), seed=0)
    reasons = [reason for _, reason in loaded.skipped]
    assert count(loaded) == len(rows)
    assert sum("no such file" in r for r in reasons) == 1
    assert any("listed already, on row 2" in r for r in reasons)
    assert sum("leaves the table's folder" in r for r in reasons) == 2  # .. and the link
    assert sum("absolute path" in r for r in reasons) == 1
    assert {"no path", "no label"} <= set(reasons)
    assert any(name.endswith("broken.png") for name, _ in loaded.skipped)
    # With outside paths allowed, the three rows that leave the folder are read.
    allowed = load_dataset(data(path, "data.outside_paths=true"), seed=0)
    assert count(allowed) == len(rows) + 1  # the three are one file: listed once
    skipped = [reason for _, reason in allowed.skipped]
    assert sum("listed already" in r for r in skipped) == 3  # with the duplicate above


@pytest.mark.parametrize(
    ("header", "rows", "extra", "message"),
    [
        (None, [], [], "is empty; its first line should name the columns"),
        (["path", "label"], [], [], "lists no image that can be read"),
        (["file_name", "label"], [("img/red1.png", "red")], [], "no column of paths"),
        (["path", "label"], [("img/red1.png", "red")], ["data.label_column=kind"],
         "no column 'kind'"),
        (["path", "label"], [("img/red1.png", "3"), ("img/red2.png", "4")], [],
         "holds only numbers"),
        (["path", "label", "split"], [("img/red1.png", "red", "training")], [],
         "has split 'training'"),
        (["path", "label", "split"], [("img/red1.png", "red", "test")], [], "gives no row to train"),
    ],
)  # fmt: skip
def test_a_bad_table_is_one_line(
    table: tuple[Path, list], header: list[str] | None, rows: list, extra: list, message: str
) -> None:
    root, _ = table
    path = root / "bad.csv"
    if header is None:
        path.write_text("")
    else:
        write_csv(path, header, rows)
    done = cli("train", "--preset", "smoke", "data.name=table", f"data.path={path}", *extra)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


@pytest.mark.parametrize(
    ("name", "message"),
    [("", "needs data.path=FILE"), ("img", "is a folder"), ("notes.txt", "not a .csv or .parquet"),
     ("gone.csv", "no such file")],
)  # fmt: skip
def test_a_table_path_that_is_no_table_is_one_line(
    table: tuple[Path, list], name: str, message: str
) -> None:
    root, _ = table
    (root / "notes.txt").write_text("path,label\n")
    where = [f"data.path={root / name}"] if name else []
    done = cli("train", "--preset", "smoke", "data.name=table", *where)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_numeric_labels_when_asked_and_a_lone_label_is_warned(
    table: tuple[Path, list], caplog: pytest.LogCaptureFixture
) -> None:
    root, rows = table
    numbered = [(p, str(list(COLOURS).index(label)), s) for p, label, s in rows]
    numbered.append((rows[0][0].replace("blue0", "blue1"), "7", "train"))  # a lone label
    path = write_csv(root / "n.csv", ["path", "label", "split"], numbered)
    with pytest.raises(DataError, match=r"data\.numeric_labels=true"):
        load_dataset(data(path), seed=0)
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        loaded = load_dataset(data(path, "data.numeric_labels=true"), seed=0)
    assert loaded.class_names == ("0", "1", "2")  # "7"'s row is blue1's second listing: skipped
    numbered[-1] = (rows[0][0].replace("blue0", "extra"), "7", "train")
    Image.open(root / rows[0][0]).save(root / "img" / "extra.png")
    path = write_csv(root / "n.csv", ["path", "label", "split"], numbered)
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        loaded = load_dataset(data(path, "data.numeric_labels=true"), seed=0)
    assert "7" in loaded.class_names
    assert any("appears on one image only (7)" in r.getMessage() for r in caplog.records)


def test_a_large_table_holds_only_the_columns_it_needs(tmp_path: Path) -> None:
    """60,000 rows with a 1 KB column nobody asked for (61 MB of CSV): reading holds the paths
    and labels, a few MB, not the table."""
    path = tmp_path / "big.csv"
    filler = "x" * 1000
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["notes", "path", "label"])
        writer.writerows((filler, f"img/{i}.png", f"c{i % 3}") for i in range(60_000))
    size = path.stat().st_size
    from cnnkit.data import table

    tracemalloc.start()
    try:
        rows = table._rows(path, ["path", "label"])
        parts, skipped = table._entries(rows, tmp_path, False, "big.csv")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(skipped) == 60_000 and not parts["train"]  # no such files
    assert peak < 60_000 * 400, (peak, size)  # less than half of the unused column per row


@pytest.mark.slow
def test_train_on_a_dataframe_names_its_files(tmp_path: Path) -> None:
    """A run trained on a DataFrame keeps its table (resumable, evaluable), says which file is
    which image, and names its mistakes by file: report.json, the page, evaluate --errors."""
    pd = pytest.importorskip("pandas")
    from cnnkit.runs import Run
    from cnnkit.workflow import train

    rows = make_images(tmp_path / "photos")
    frame = pd.DataFrame(
        [(str(tmp_path / "photos" / p), label, s) for p, label, s in rows],
        columns=["image", "label", "split"],
    )
    config = load_config("smoke", overrides=[
        "data.name=table", "data.image_size=12", "train.epochs=2", "train.batch_size=16",
        "augment.enabled=false", "name=frame",
    ])  # fmt: skip
    run = train(config, tmp_path / "runs", verbose=0, frame=frame)
    assert Run(run.path).config().data.path == str((run.path / "table.csv").resolve())
    with (run.path / "files.csv").open() as f:
        listed = list(csv.DictReader(f))
    test_files = [r["file"] for r in listed if r["split"] == "test"]
    assert sorted(Path(f).name for f in test_files) == sorted(
        Path(p).name for p, _, s in rows if s == "test"
    )
    assert all(Path(r["file"]).stem.rstrip("0123456789") == r["label"] for r in listed)
    numbers = json.loads((run.path / "report.json").read_text())
    probabilities, labels = run.predictions()
    wrong = int((probabilities.argmax(1) != labels).sum())
    assert len(numbers["mistakes"]) == min(wrong, 16)
    for mistake in numbers["mistakes"]:
        assert mistake["file"] == test_files[mistake["index"]]
    if numbers["mistakes"]:
        assert Path(numbers["mistakes"][0]["file"]).name in run.report_path.read_text()
    errors = tmp_path / "mistakes.csv"
    done = cli("evaluate", str(run.path), "--errors", str(errors))
    assert done.returncode == 0, done.stderr
    with errors.open() as f:
        written = list(csv.DictReader(f))
    assert len(written) == wrong
    assert all(r["file"] == test_files[int(r["index"])] for r in written)
    again = cli("evaluate", str(run.path), "--errors", str(errors))
    assert again.returncode == 2 and "exists" in again.stderr
