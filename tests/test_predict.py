"""`cnnkit predict` at scale: folders, globs, formats, broken files mixed in, many images."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.predictor import expand_paths
from conftest import cli


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
