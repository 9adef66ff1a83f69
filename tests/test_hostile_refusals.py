"""Hostile input, class 3: one line, the right exit code, for every refusal; nothing saved is
lost and a refused run leaves no folder."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from conftest import cli


def _one_line(result: object, code: int = 2) -> str:
    stderr = result.stderr.strip()  # type: ignore[attr-defined]
    assert result.returncode == code, stderr  # type: ignore[attr-defined]
    assert len(stderr.splitlines()) == 1 and "internal error" not in stderr, stderr
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr
    return stderr


@pytest.fixture
def run_copy(untrained_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(untrained_run, copy, ignore=shutil.ignore_patterns("checkpoints", "export"))
    return copy


@pytest.mark.parametrize(
    ("args", "message"),
    [(("--port", "70000"), "--port must be in 1..65535"), (("--port", "0"), "--port must be"),
     (("--max-mb", "-1"), "max_bytes must be in"), (("--timeout", "0"), "timeout must be in"),
     (("--max-images", "0"), "max_images must be in"), (("--max-pixels", "-5"), "max_pixels")],
)  # fmt: skip
def test_serve_refuses_limits_that_would_refuse_every_request(
    untrained_run: Path, args: tuple[str, ...], message: str
) -> None:
    assert message in _one_line(cli("serve", str(untrained_run), *args))


def test_foreign_and_damaged_model_files(run_copy: Path, tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    Image.new("L", (8, 8)).save(image)
    with h5py.File(run_copy / "model.keras", "w") as f:  # a Keras 2 HDF5 file under the name
        f.create_dataset("weights", data=np.zeros(3))
    assert "not a zip archive" in _one_line(cli("predict", str(run_copy), str(image)))
    (run_copy / "model.keras").write_bytes(np.random.default_rng(0).bytes(5000))
    assert "not a zip archive" in _one_line(cli("evaluate", str(run_copy)))
    # A damaged export: the runtime's own error becomes one line that says how to remake it.
    (run_copy / "export").mkdir()
    (run_copy / "export" / "model.onnx").write_bytes(b"\x08\x01garbage" * 100)
    line = _one_line(cli("predict", str(run_copy), str(image), "--engine", "onnx"))
    assert "is not a loadable onnx model" in line and "--force" in line
    (run_copy / "export" / "onnx.json").write_text("{not json")
    assert "damaged" in _one_line(cli("predict", str(run_copy), str(image), "--engine", "onnx"))


@pytest.mark.slow  # trains twice
def test_a_full_disk_during_training_is_one_line_and_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnnkit import checkpoint
    from cnnkit.runs import Run

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "state.npz")

    monkeypatch.setattr(checkpoint, "atomic_write", full)
    runs = tmp_path / "runs"
    line = _one_line(cli("train", "--preset", "smoke", "data.name=synthetic", "train.epochs=1",
                         "--runs-dir", str(runs)))  # fmt: skip
    assert "could not write the checkpoint" in line and "free some space" in line
    [run] = runs.iterdir()
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "failed" and "No space left" in meta["error"]

    # When run.json cannot be written either, the error that stopped training is still the one
    # line shown, and run.json keeps what it had.
    original = Run.update_meta

    def no_room(self: Run, **values: object) -> None:
        if values.get("status") == "failed":
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "run.json"))
        original(self, **values)

    monkeypatch.setattr(Run, "update_meta", no_room)
    line = _one_line(cli("train", "--preset", "smoke", "data.name=synthetic", "train.epochs=1",
                         "--runs-dir", str(runs)))  # fmt: skip
    assert "could not write the checkpoint" in line
    second = next(r for r in runs.iterdir() if r != run)
    assert json.loads((second / "run.json").read_text())["status"] == "running"

    # Any other file of the run that cannot be written for want of space: one line that names
    # the run and how to continue it.
    monkeypatch.undo()

    def history_full(self: Run, history: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "history.csv"))

    monkeypatch.setattr(Run, "write_history", history_full)
    line = _one_line(cli("train", "--preset", "smoke", "data.name=synthetic", "train.epochs=1",
                         "--runs-dir", str(runs), "name=third"))  # fmt: skip
    assert "the disk of" in line and f"cnnkit train --resume {runs / 'third'}" in line
    assert json.loads((runs / "third" / "run.json").read_text())["status"] == "failed"


def test_a_refused_run_leaves_no_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil as shell
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shell, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    runs = tmp_path / "runs"
    line = _one_line(cli("train", "--preset", "smoke", "data.name=digits", "--runs-dir", str(runs)))
    assert "MB free" in line
    assert not runs.exists()


def test_oversized_and_hostile_images_in_predict(untrained_run: Path, tmp_path: Path) -> None:
    from hostile import big_png

    bomb = big_png(tmp_path / "bomb.png", 20000, 20000, "RGB", rows=2)
    line = _one_line(cli("predict", str(untrained_run), str(bomb)))
    assert "400,000,000 pixels is more than the 40,000,000 pixels allowed" in line
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(bomb.read_bytes()[:200])
    assert "cut.png" in _one_line(cli("predict", str(untrained_run), str(truncated)))
