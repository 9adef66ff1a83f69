"""cnnkit.checkpoint and the resume path: training that survives kills, Ctrl-C, NaN, damaged
checkpoints, and exact resumption.

Every run here is deterministic (train.deterministic=true) on the generated 32x32x3 data, so
"as if nothing happened" is checked bit for bit against an uninterrupted run. The runs that are
killed or interrupted are real processes; the reference run, the resumptions and the refusals
go through the command's entry point in this process (so the reference, trained here, also
checks that a run is the same in any process).
"""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cnnkit.runs import METRICS_FILE, Run
from conftest import cli, last_line, run_cli

pytestmark = pytest.mark.slow

EPOCHS = 4
# The tutorial's network at a sixteenth of its widths: the same layers, optimizer and state, in
# a checkpoint of a few hundred kB, so that each run costs little besides its start-up.
SETTINGS = [
    "--preset", "smoke", "data.name=synthetic", f"train.epochs={EPOCHS}", "train.batch_size=32",
    "train.checkpoint_steps=5", "train.deterministic=true", "report.enabled=false",
    "model.params.filters=[8,16,16]", "model.params.dense=32",
]  # fmt: skip
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def _weights(run: Path) -> list[np.ndarray]:
    return Run(run).load_model().get_weights()


def _history(run: Path) -> dict[str, np.ndarray]:
    return {k: np.array(v) for k, v in Run(run).history().items()}


def _meta(run: Path) -> dict[str, object]:
    return Run(run).meta()


def _train(runs: Path, name: str, *extra: str) -> Path:
    return last_line(cli("train", *SETTINGS, "--runs-dir", str(runs), f"name={name}", *extra))


def _start(runs: Path, name: str, prefix: list[str] | None = None) -> subprocess.Popen[str]:
    command = prefix or [sys.executable, "-m", "cnnkit"]
    return subprocess.Popen(
        [*command, "train", *SETTINGS, "--runs-dir", str(runs), f"name={name}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for_checkpoint(run: Path, process: subprocess.Popen[str], timeout: float = 120) -> None:
    state = Run(run).state_path
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
    # The temperature fitted after training is the uninterrupted run's, bit for bit.
    calibration = meta["calibration"]
    assert calibration is not None and calibration == _meta(reference)["calibration"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def reference(runs: Path) -> Path:
    return _train(runs, "reference")


def test_two_deterministic_runs_are_identical(runs: Path, reference: Path) -> None:
    # The twin is a real process: the same seed gives the same run in any process.
    twin = last_line(run_cli("train", *SETTINGS, "--runs-dir", str(runs), "name=twin"))
    assert (
        Run(twin).file(METRICS_FILE).read_bytes() == Run(reference).file(METRICS_FILE).read_bytes()
    )
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
    resumed = cli("train", "--resume", str(run))
    assert last_line(resumed) == run
    _same_as(reference, run)
    assert len(_meta(run)["resumes"]) == 1


def _wait_for_position(
    run: Path, process: subprocess.Popen[str], position: tuple[int, int]
) -> None:
    from cnnkit.checkpoint import saved_position

    deadline = time.monotonic() + 120
    while saved_position(Run(run).state_path) < position:
        assert process.poll() is None, f"training ended before reaching {position}"
        assert time.monotonic() < deadline, f"no checkpoint at {position} appeared"
        time.sleep(0.01)


def test_sigkill_at_a_random_instant_then_resume(runs: Path, reference: Path) -> None:
    """Killed at a new random instant every run (benchmarks/kill_resume.py kills many times),
    said on failure: anywhere in the first 80 % of the training left after its second
    checkpoint, at the process's own pace (the time between its first two checkpoints)."""
    process = _start(runs, "sigkill")
    run = runs / "sigkill"
    _wait_for_checkpoint(run, process)  # step 5
    first = time.monotonic()
    _wait_for_position(run, process, (0, 10))
    per_checkpoint = time.monotonic() - first  # 5 steps and one checkpoint write
    left = (EPOCHS * 20 - 10) / 5 * per_checkpoint  # what is left of the training, at least
    delay = random.SystemRandom().uniform(0, 0.8 * left)
    time.sleep(delay)
    process.kill()
    process.communicate()
    when = f"killed {delay:.3f} s after step 10 ({per_checkpoint:.3f} s per 5 steps)"
    assert process.returncode == -signal.SIGKILL, when
    assert _meta(run)["status"] == "running"  # it never got to say otherwise
    resumed = cli("train", "--resume", str(run))
    assert resumed.returncode == 0, f"{resumed.stderr} ({when})"
    try:
        _same_as(reference, run)
    except AssertionError as exc:
        raise AssertionError(f"{when}: {exc}") from None


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
    run = Run(runs / "inwrite")
    half = list(run.checkpoints.glob(".state.npz.*.tmp"))  # the half-written file
    assert len(half) == 1 and half[0].read_bytes()[:4] == b"PK\x03\x04"
    from cnnkit.checkpoint import saved_position

    assert saved_position(run.state_path) == (0, 15)  # the third commit
    resumed = cli("train", "--resume", str(run.path))
    assert resumed.returncode == 0, resumed.stderr
    assert not list(run.checkpoints.glob(".*.tmp*"))
    _same_as(reference, run.path)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    runs: Path, files_snapshot: Callable[[Path], dict[str, bytes]]
) -> None:
    # Plain SGD at a learning rate of 1e6 (the top of its range) multiplies every gradient by a
    # million: the weights overflow within a few steps, with oneDNN's kernels or Eigen's. (Adam
    # moves weights by about the rate per step, which float32 can hold for an epoch or two.)
    run = _train(
        runs, "diverge", "train.epochs=2", "train.optimizer=sgd", "train.learning_rate=0.01"
    )
    before = files_snapshot(Run(run).checkpoints)
    result = cli(
        "train", "--resume", str(run), "--force", "train.epochs=4", "train.learning_rate=1e6"
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("cnnkit: error")]
    assert len(lines) == 1 and "NaN or infinite at epoch 3" in lines[0]
    assert "the checkpoint at end of epoch 2 is kept" in lines[0]
    assert "Traceback" not in result.stderr
    assert files_snapshot(Run(run).checkpoints) == before  # nothing good was overwritten
    assert _meta(run)["status"] == "failed"
    # The kept checkpoint still resumes, with a sane learning rate, as the message says.
    again = cli(
        "train", "--resume", str(run), "--force", "train.epochs=3", "train.learning_rate=0.001"
    )
    assert again.returncode == 0, again.stderr
    meta = _meta(run)
    assert meta["epochs"] == 3 and len(meta["resumes"]) == 2 and meta["error"] is None
    assert meta["resumes"][-1]["previous_status"] == "failed"
    assert "NaN" in meta["resumes"][-1]["previous_error"]


def test_nan_before_any_checkpoint(runs: Path) -> None:
    result = cli(
        "train", *SETTINGS, "--runs-dir", str(runs), "name=nan0", "train.optimizer=sgd",
        "train.learning_rate=1e6",
    )  # fmt: skip
    assert result.returncode == 2
    assert "no checkpoint was saved yet" in result.stderr
    assert _meta(runs / "nan0")["status"] == "failed"


def test_damaged_and_foreign_checkpoints_are_refused(
    runs: Path, reference: Path, digits_run: Path, tmp_path: Path
) -> None:
    import shutil

    copy = Run(tmp_path / "copy")
    shutil.copytree(reference, copy.path)
    copy.update_meta(status="interrupted")
    state = copy.state_path
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])
    result = cli("train", "--resume", str(copy.path))
    assert result.returncode == 2 and "is damaged" in result.stderr
    assert state.read_bytes() == data[: len(data) // 2]  # left as it was, for inspection
    shutil.copyfile(Run(digits_run).state_path, state)
    result = cli("train", "--resume", str(copy.path))
    assert result.returncode == 2 and "does not match this run's model" in result.stderr
    state.write_bytes(b"#!/bin/sh\necho not a checkpoint\n")
    assert "is damaged" in cli("train", "--resume", str(copy.path)).stderr


def test_resume_keeps_the_config_unless_forced(runs: Path, reference: Path) -> None:
    result = cli("train", "--resume", str(reference))
    assert result.returncode == 2 and "is complete; nothing to resume" in result.stderr
    result = cli("train", "--resume", str(reference), "train.epochs=9")
    assert result.returncode == 2 and "add --force" in result.stderr
    assert f"{EPOCHS} -> 9" in result.stderr
    result = cli("train", "--resume", str(reference), "--force", "model.params.dense=8")
    assert result.returncode == 2 and "cannot change on resume" in result.stderr
    result = cli("train", "--resume", str(runs / "nowhere"))
    assert result.returncode == 2 and "not a folder" in result.stderr
    assert cli("train", "--force").returncode == 2


def test_a_run_being_trained_cannot_be_resumed_twice(runs: Path, reference: Path) -> None:
    from cnnkit.runs import Run, lock_run

    with lock_run(Run(reference)):  # flock: held per open file, so also against this process
        result = cli("train", "--resume", str(reference), "--force", "train.epochs=7")
    assert result.returncode == 2 and "being trained by another cnnkit process" in result.stderr


def test_space_and_write_failures_are_clean_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    from cnnkit import checkpoint
    from cnnkit.errors import RunError
    from cnnkit.resources import require_free_space

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))
    with pytest.raises(RunError, match="1 MB free; training needs about 100 MB"):
        require_free_space(tmp_path, 100_000_000)
    monkeypatch.undo()

    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli(
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
    assert not list(tmp_path.glob(".*.tmp*"))


# The fast recipe on narrow layers and 384 images: every piece of its state (whitening,
# lookahead, the schedule, flip phases) is there, at a fraction of the cost.
FAST = [
    "--preset", "fast", "data.name=synthetic", "train.epochs=3", "train.batch_size=64",
    "train.checkpoint_steps=4", "train.deterministic=true", "train.tta=1", "report.enabled=false",
    "model.params.widths=[16,32,32]", "data.train_subset=384",
]  # fmt: skip


def test_fast_recipe_resumes_exactly(runs: Path) -> None:
    """Lookahead's slow weights, the schedule's position and the flip phase survive a kill."""
    reference = last_line(cli("train", *FAST, "--runs-dir", str(runs), "name=fast_ref"))
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "train", *FAST, "--runs-dir", str(runs), "name=fast_cut"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    run = runs / "fast_cut"
    _wait_for_checkpoint(run, process)
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL  # killed mid-run, not after it
    resumed = cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    for a, b in zip(_weights(reference), _weights(run), strict=True):
        assert np.array_equal(a, b)
    # Calibrated on the fast recipe's seeded calibration split (it has no validation split), to
    # the same temperature; metrics.json holds it, and the scores before and after it.
    calibration = Run(run).meta()["calibration"]
    assert calibration["source"] == "calibration split" and calibration["images"] == 20  # 5 %
    assert calibration == Run(reference).meta()["calibration"]
    assert (
        Run(run).file(METRICS_FILE).read_bytes() == Run(reference).file(METRICS_FILE).read_bytes()
    )
    # `cnnkit evaluate` applies the run's test-time augmentation (train.tta=1), as train did.
    again = json.loads(cli("evaluate", str(run), "--json").stdout)
    saved = Run(run).metrics()["test"]
    assert again["confusion"] == saved["confusion"] and math.isclose(
        again["loss"], saved["loss"], rel_tol=1e-6
    )
