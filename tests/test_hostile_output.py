"""Hostile input, class 4: output that cannot be forged. A file or class name can hold any
character but "/" and NUL; in every human format it is one escaped line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.log import printable
from conftest import cli

FORGED = "x.png\nfake.png  7 0.9999  # ok\r\x1b[2K\u202egnp.live"


def test_printable_escapes_what_could_fake_a_line() -> None:
    assert printable("photo é 日本.png") == "photo é 日本.png"
    shown = printable(FORGED)
    assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown
    assert "\u202e" not in shown and "\\u202e" in shown and "\\n" in shown


def test_predict_table_and_errors_keep_one_line_per_file(
    untrained_run: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("L", (8, 8), 255).save(folder / FORGED, format="PNG")
    (folder / ("broken\nfake.png  0 1.0000")).write_bytes(b"not an image")
    files = sorted(str(p) for p in folder.iterdir())
    table = cli("predict", str(untrained_run), *files)
    assert table.returncode == 2
    assert len(table.stdout.strip().splitlines()) == 1 and "\\n" in table.stdout
    assert "\x1b" not in table.stdout and "\u202e" not in table.stdout
    assert len(table.stderr.strip().splitlines()) == 1 and "broken\\nfake.png" in table.stderr
    # Machine formats keep the real name (quoted by their own rules).
    rows = list(csv.reader(io.StringIO(cli("predict", str(untrained_run), files[1], "--format",
                                           "csv").stdout)))  # fmt: skip
    assert rows[1][0] == files[1]
    answer = json.loads(cli("predict", str(untrained_run), files[1], "--json").stdout)
    assert answer[0]["image"] == files[1]


@pytest.mark.parametrize("verb", ["data inspect", pytest.param("train", marks=pytest.mark.slow)])
def test_class_names_with_control_characters_stay_on_one_line(verb: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for name in ("cat", "dog\nfake  99"):
        (data / name).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                data / name / f"{i}.png"
            )
    if verb == "data inspect":
        result = cli("data", "inspect", str(data), "--grid", str(tmp_path / "grid.png"))
        assert result.returncode == 0, result.stderr
        assert "dog\\nfake  99" in result.stdout and "\nfake  99" not in result.stdout
        return
    runs = tmp_path / "runs"
    result = cli("train", "--preset", "smoke", "data.name=folder", f"data.path={data}",
                 "train.epochs=1", "report.enabled=false", "--runs-dir", str(runs))  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = result.stdout.strip().splitlines()[-1]
    evaluated = cli("evaluate", run)
    assert "dog\\nfake  99" in evaluated.stdout and "\nfake  99" not in evaluated.stdout
