"""cnnkit.comparison: `cnnkit compare` on two runs (its table, files and page), one of them
trained with TensorBoard logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from browser import open_page
from conftest import cli, last_line, run_cli
from test_reporter import PNG


@pytest.mark.slow
def test_compare_two_runs_and_tensorboard(digits_run: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    other = cli("train", "--preset", "smoke", "--runs-dir", str(runs), "data.name=digits",
                "train.epochs=3", "augment.flip=false", "name=short",
                "train.tensorboard=true", "report.enabled=false")  # fmt: skip
    short = last_line(other)
    assert not (short / "report.html").exists()  # report.enabled=false
    events = list((short / "tensorboard").rglob("events.out.tfevents.*"))
    assert {p.parent.name for p in events} == {"train", "validation"}

    done = run_cli("compare", str(digits_run), str(short), "--out", str(tmp_path / "cmp"))
    assert done.returncode == 0, done.stderr  # the verb as a real process
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "model", "status"]
    assert any(line.startswith("digits ") for line in lines)
    assert any(line.startswith("short ") for line in lines)
    assert any(line.startswith("train.epochs") and "15" in line and "3" in line for line in lines)
    folder = tmp_path / "cmp"
    assert lines[-1] == str(folder / "compare.html")
    saved = json.loads((folder / "compare.json").read_text())
    assert [r["run"] for r in saved["runs"]] == ["digits", "short"]
    assert saved["config_differences"]["train.epochs"] == [15, 3]
    for name in ("curves_by_epoch.png", "curves_by_time.png"):
        assert (folder / name).read_bytes()[:8] == PNG
    page = open_page(folder / "compare.html", screenshot="compare.png")
    assert page.problems == [] and page.images == 2
    # A second comparison never overwrites the first.
    again = cli("compare", str(digits_run), str(short), "--out", str(folder))
    assert again.stdout.splitlines()[-1] == str(tmp_path / "cmp-2" / "compare.html")
    for args, message in (
        ([str(short)], "two or more"),
        ([str(short), str(short)], "twice"),
        ([str(short), str(tmp_path)], "not a cnnkit run"),
    ):
        bad = cli("compare", *args)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
