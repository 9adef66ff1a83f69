"""Training that survives: kills, Ctrl-C, NaN, damaged checkpoints, and exact resumption.

Every run here is deterministic (train.deterministic=true) on the generated 32x32x3 data, so
"as if nothing happened" is checked bit for bit against an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow

EPOCHS = 6
SETTINGS = [
    "--preset", "smoke", "data.name=synthetic", f"train.epochs={EPOCHS}", "train.batch_size=32",
    "train.checkpoint_steps=5", "train.deterministic=true", "report.enabled=false",
]  # fmt: skip
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def _weights(run: Path) -> list[np.ndarray]:
    from cnnkit.runs import load_model

    return load_model(run / "model.keras").get_weights()


def _history(run: Path) -> dict[str, np.ndarray]:
    from cnnkit.report import read_history

    return {k: np.array(v) for k, v in read_history(run / "history.csv").items()}


def _meta(run: Path) -> dict[str, object]:
    return json.loads((run / "run.json").read_text())


def _train(runs: Path, name: str, *extra: str) -> Path:
    result = run_cli("train", *SETTINGS, "--runs-dir", str(runs), f"name={name}", *extra)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def _start(runs: Path, name: str, prefix: list[str] | None = None) -> subprocess.Popen[str]:
    command = prefix or [sys.executable, "-m", "cnnkit"]
    return subprocess.Popen(
        [*command, "train", *SETTINGS, "--runs-dir", str(runs), f"name={name}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_checkpoint(run: Path, process: subprocess.Popen[str], timeout: float = 120) -> None:
    state = run / "checkpoints" / "state.npz"
    deadline = time.monotonic() + timeout
    while not state.exists():
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


def _same_as(reference: Path, run: Path) -> None:
    meta = _meta(run)
    assert meta["status"] == "complete" and meta["epochs"] == EPOCHS
    history = _history(run)
    assert list(history["epoch"]) == list(range(EPOCHS))  # one row per epoch, none twice
    expected = _history(reference)
    for key in METRICS:
        # Bit-identical but for the one epoch resumed part-way, whose running means are merged.
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-6, atol=1e-7)
    for a, b in zip(_weights(reference), _weights(run), strict=True):
        assert np.array_equal(a, b)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def reference(runs: Path) -> Path:
    return _train(runs, "reference")


def test_two_deterministic_runs_are_identical(runs: Path, reference: Path) -> None:
    twin = _train(runs, "twin")
    assert (twin / "metrics.json").read_bytes() == (reference / "metrics.json").read_bytes()
    for key in METRICS:
        assert np.array_equal(_history(twin)[key], _history(reference)[key])
    for a, b in zip(_weights(reference), _weights(twin), strict=True):
        assert np.array_equal(a, b)


def test_ctrl_c_saves_then_resume_finishes_as_if_uninterrupted(runs: Path, reference: Path) -> None:
    process = _start(runs, "sigint")
    run = runs / "sigint"
    _wait_for_checkpoint(run, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert f"resume with: cnnkit train --resume {run}" in stderr
    assert "Traceback" not in stderr
    assert _meta(run)["status"] == "interrupted"
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip().splitlines()[-1] == str(run)
    _same_as(reference, run)
    assert len(_meta(run)["resumes"]) == 1


def test_sigkill_at_a_random_instant_then_resume(runs: Path, reference: Path) -> None:
    process = _start(runs, "sigkill")
    run = runs / "sigkill"
    _wait_for_checkpoint(run, process)
    time.sleep(float(np.random.default_rng(7).uniform(0, 2.0)))
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    assert _meta(run)["status"] == "running"  # it never got to say otherwise
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    _same_as(reference, run)


DIE_IN_THE_FOURTH_WRITE = """
import os, signal, sys
import numpy as np
real, calls = np.savez, [0]
def savez(f, **arrays):
    calls[0] += 1
    if calls[0] == 4:  # half a file, then the power goes
        f.write(b"PK\\x03\\x04" + bytes(4096)); f.flush(); os.kill(os.getpid(), signal.SIGKILL)
    return real(f, **arrays)
np.savez = savez
from cnnkit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_a_checkpoint_write(runs: Path, reference: Path) -> None:
    process = _start(runs, "inwrite", prefix=[sys.executable, "-c", DIE_IN_THE_FOURTH_WRITE])
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL
    run = runs / "inwrite"
    assert (run / "checkpoints" / ".state.npz.tmp").exists()  # the half-written file
    from cnnkit.checkpoint import TrainState

    with np.load(run / "checkpoints" / "state.npz", allow_pickle=False) as npz:  # the third commit
        state = TrainState(**json.loads(bytes(npz["record"]).decode())["state"])
    assert (state.epoch, state.step) == (0, 15)
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    assert not (run / "checkpoints" / ".state.npz.tmp").exists()
    _same_as(reference, run)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    runs: Path, files_snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    run = _train(runs, "diverge", "train.epochs=2")
    before = files_snapshot(run / "checkpoints")
    # Adam moves every weight by about the learning rate per step: 1e30 overflows at once.
    result = run_cli(
        "train", "--resume", str(run), "--force", "train.epochs=4", "train.learning_rate=1e30"
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("cnnkit: error")]
    assert len(lines) == 1 and "NaN or infinite at epoch 3" in lines[0]
    assert "the checkpoint at end of epoch 2 is kept" in lines[0]
    assert "Traceback" not in result.stderr
    assert files_snapshot(run / "checkpoints") == before  # nothing good was overwritten
    assert _meta(run)["status"] == "failed"
    # The kept checkpoint still resumes, with a sane learning rate, as the message says.
    again = run_cli(
        "train", "--resume", str(run), "--force", "train.epochs=3", "train.learning_rate=0.001"
    )
    assert again.returncode == 0, again.stderr
    meta = _meta(run)
    assert meta["epochs"] == 3 and len(meta["resumes"]) == 2 and meta["error"] is None
    assert meta["resumes"][-1]["previous_status"] == "failed"
    assert "NaN" in meta["resumes"][-1]["previous_error"]


def test_nan_before_any_checkpoint(runs: Path) -> None:
    result = run_cli(
        "train", *SETTINGS, "--runs-dir", str(runs), "name=nan0", "train.learning_rate=1e30"
    )
    assert result.returncode == 2
    assert "no checkpoint was saved yet" in result.stderr
    assert _meta(runs / "nan0")["status"] == "failed"


def test_damaged_and_foreign_checkpoints_are_refused(
    runs: Path, reference: Path, digits_run: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    (copy / "run.json").write_text(json.dumps({**_meta(copy), "status": "interrupted"}))
    state = copy / "checkpoints" / "state.npz"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])
    result = run_cli("train", "--resume", str(copy))
    assert result.returncode == 2 and "is damaged" in result.stderr
    assert state.read_bytes() == data[: len(data) // 2]  # left as it was, for inspection
    shutil.copyfile(digits_run / "checkpoints" / "state.npz", state)
    result = run_cli("train", "--resume", str(copy))
    assert result.returncode == 2 and "does not match this run's model" in result.stderr
    state.write_bytes(b"#!/bin/sh\necho not a checkpoint\n")
    assert "is damaged" in run_cli("train", "--resume", str(copy)).stderr


def test_resume_keeps_the_config_unless_forced(runs: Path, reference: Path) -> None:
    result = run_cli("train", "--resume", str(reference))
    assert result.returncode == 2 and "is complete; nothing to resume" in result.stderr
    result = run_cli("train", "--resume", str(reference), "train.epochs=9")
    assert result.returncode == 2 and "add --force" in result.stderr and "6 -> 9" in result.stderr
    result = run_cli("train", "--resume", str(reference), "--force", "model.params.dense=8")
    assert result.returncode == 2 and "cannot change on resume" in result.stderr
    result = run_cli("train", "--resume", str(runs / "nowhere"))
    assert result.returncode == 2 and "not a folder" in result.stderr
    assert run_cli("train", "--force").returncode == 2


def test_a_run_being_trained_cannot_be_resumed_twice(runs: Path, reference: Path) -> None:
    from cnnkit.runs import Run, lock_run

    with lock_run(Run(reference)):
        result = run_cli("train", "--resume", str(reference), "--force", "train.epochs=7")
    assert result.returncode == 2 and "being trained by another cnnkit process" in result.stderr


def test_space_and_write_failures_are_clean_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    from cnnkit import checkpoint
    from cnnkit.errors import RunError
    from cnnkit.runs import require_free_space

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(RunError, match="1 MB free; training needs about 100 MB"):
        require_free_space(tmp_path, 100_000_000)
    monkeypatch.undo()

    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_cli(
        "train", "--preset", "smoke", "data.name=synthetic", "--runs-dir", str(blocker / "runs")
    )
    assert result.returncode == 2 and "cannot create the runs folder" in result.stderr

    from types import SimpleNamespace

    model = SimpleNamespace(variables=[], optimizer=SimpleNamespace(variables=[]))
    target = tmp_path / "state.npz"
    target.write_bytes(b"the previous checkpoint")

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", full_disk)
    with pytest.raises(RunError, match=r"No space left on device.*previous one is intact"):
        checkpoint.save_state(target, model, checkpoint.TrainState())
    assert target.read_bytes() == b"the previous checkpoint"
    assert not list(tmp_path.glob(".*.tmp"))


FAST = [
    "--preset", "fast", "data.name=synthetic", "train.epochs=3", "train.batch_size=64",
    "train.checkpoint_steps=4", "train.deterministic=true", "train.tta=1", "report.enabled=false",
]  # fmt: skip


def test_fast_recipe_resumes_exactly(runs: Path) -> None:
    """Lookahead's slow weights, the schedule's position and the flip phase survive a kill."""
    reference = run_cli("train", *FAST, "--runs-dir", str(runs), "name=fast_ref")
    assert reference.returncode == 0, reference.stderr
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "train", *FAST, "--runs-dir", str(runs), "name=fast_cut"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run = runs / "fast_cut"
    _wait_for_checkpoint(run, process)
    process.kill()
    process.communicate()
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    for a, b in zip(_weights(runs / "fast_ref"), _weights(run), strict=True):
        assert np.array_equal(a, b)
    assert (run / "metrics.json").read_bytes() == (runs / "fast_ref" / "metrics.json").read_bytes()
    # `cnnkit evaluate` applies the run's test-time augmentation (train.tta=1), as train did.
    again = json.loads(run_cli("evaluate", str(run), "--json").stdout)
    saved = json.loads((run / "metrics.json").read_text())["test"]
    assert again["confusion"] == saved["confusion"] and math.isclose(
        again["loss"], saved["loss"], rel_tol=1e-6
    )
