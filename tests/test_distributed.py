"""Data-parallel training (train.distribute=data_parallel, cnnkit launch) on the JAX backend.

Real processes on 127.0.0.1, as on a cluster: two processes of one device each must train the
same network as one process with two (virtual) devices, bit for bit, since the global batch, its
split and the reduction over the devices are the same; one process with one device sums in
another order, so it is compared to a tolerance. A kill of one process: the other must end
within the bound with one line that names the dead one, and one process resumes the run.
The pytest process itself runs TensorFlow: the .keras files are read here, on another backend.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from cnnkit.checkpoint import saved_position
from cnnkit.distributed import Group
from cnnkit.runs import Run
from conftest import cli

EPOCHS = 2
# The smoke preset (the tutorial's CNN, its augmentation and Adam) at a sixteenth of its widths,
# on the 800 generated images: 20 steps of a global batch of 32 per epoch.
SETTINGS = [
    "--preset", "smoke", "data.name=synthetic", f"train.epochs={EPOCHS}", "train.batch_size=32",
    "train.checkpoint_steps=5", "report.enabled=false", "model.params.filters=[8,16,16]",
    "model.params.dense=32",
    # float32 on every CPU: on one with bf16 (AMX), "auto" would train in bfloat16, whose
    # rounding makes 2 processes and 1 device drift apart beyond the bound below (3.5 %).
    "train.precision=fp32",
]  # fmt: skip
JAX = {"KERAS_BACKEND": "jax"}
TWO_DEVICES = {**JAX, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def test_each_process_feeds_its_slice_of_every_global_batch() -> None:
    order = np.random.default_rng(0).permutation(43)  # 5 batches of 8, then 3 images
    parts = [Group(p, 2, 4, distributed=True).shard(order, 8) for p in range(2)]
    assert [len(p) for p in parts] == [20, 20]  # the 3 left over cut to 0 (a multiple of 4)
    for b in range(5):  # process 0 has the first half of each batch, process 1 the second
        assert np.array_equal(np.concatenate([p[4 * b : 4 * b + 4] for p in parts]),
                              order[8 * b : 8 * b + 8])  # fmt: skip
    tail = [Group(p, 2, 2, distributed=True).shard(order[: 45 - 2], 8)[-1:] for p in range(2)]
    assert np.array_equal(np.concatenate(tail), order[40:42])  # 3 left over -> 2, one each
    assert np.array_equal(Group().shard(order, 8), order)  # one process: all of it
    assert Group(1, 2, 2, distributed=True).local_batch(32) == 16


def test_a_config_crosses_between_processes_unchanged() -> None:
    """What Group.broadcast carries for a budget's plan: the config as JSON."""
    from cnnkit.config import Config, load_config

    config = load_config("fast", overrides=["model.params.widths=[8,16,16]", "train.budget=60"])
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_refusals_are_one_line(tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")
    # TensorFlow (this process's backend) has no data-parallel engine in Keras 3.
    result = cli("train", *SETTINGS, "--runs-dir", runs, "train.distribute=data_parallel")
    assert result.returncode == 2
    assert "KERAS_BACKEND=jax" in result.stderr and len(result.stderr.splitlines()) == 1
    result = cli("launch", "--nproc", "2", "--", "evaluate", runs)
    assert result.returncode == 2 and "runs `train`" in result.stderr
    result = cli("launch", "--nproc", "2", "--", "train", env={"KERAS_BACKEND": "torch"})
    assert result.returncode == 2 and "JAX backend" in result.stderr
    result = cli("launch", "--nodes", "2", "--", "train")
    assert result.returncode == 2 and "--coordinator" in result.stderr
    assert not Path(runs).exists()


def _cnnkit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=600)  # fmt: skip


def _launch(runs: Path, name: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "launch", "--nproc", "2", *extra, "--", "train",
         *SETTINGS, "--runs-dir", str(runs), f"name={name}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _weights(run: Path) -> list[np.ndarray]:
    return list(Run(run).load_model().get_weights())


def _largest_difference(a: Path, b: Path) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(_weights(a), _weights(b), strict=True))


def _workers(launcher: subprocess.Popen[str]) -> dict[int, psutil.Process]:
    """The launcher's processes by their process id in the run."""
    found = {}
    for child in psutil.Process(launcher.pid).children():
        with contextlib.suppress(psutil.Error, KeyError):
            found[int(child.environ()["KERAS_DISTRIBUTION_PROCESS_ID"])] = child
    return found


def _wait_mid_epoch(run: Path, launcher: subprocess.Popen[str], timeout: float = 240) -> None:
    """Until a checkpoint part-way through the first epoch is committed."""
    deadline = time.monotonic() + timeout
    while saved_position(Run(run).state_path) == (0, 0):
        assert launcher.poll() is None, launcher.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("distributed")


@pytest.fixture(scope="module")
def trained(runs: Path) -> tuple[Path, Path]:
    """Two processes of one device each, uninterrupted, and beside them (started at the same
    time: most of each is start-up and XLA's compiling, which overlap) one process with one
    device; their run folders."""
    launcher = _launch(runs, "two")
    one = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "train", *SETTINGS, "--runs-dir", str(runs), "name=one",
         "train.distribute=data_parallel"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **JAX},
    )  # fmt: skip
    try:
        out, err = launcher.communicate(timeout=600)
        one_out, one_err = one.communicate(timeout=600)
    finally:  # neither is left running when the other timed out
        for process in (launcher, one):
            if process.poll() is None:
                process.kill()
    assert launcher.returncode == 0, err
    assert "[Gloo]" not in out and "I0000" not in err  # the frameworks' chatter filtered out
    assert one.returncode == 0, one_err
    return Path(out.strip().splitlines()[-1]), Path(one_out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def reference(trained: tuple[Path, Path]) -> Path:
    """Two processes of one device each, uninterrupted."""
    return trained[0]


@pytest.mark.slow
def test_two_processes_train_the_network_of_one(trained: tuple[Path, Path]) -> None:
    reference, single = trained
    meta = Run(reference).meta()
    assert meta["status"] == "complete" and meta["backend"] == "jax"
    assert meta["distributed"] == {"processes": 2, "devices": 2}
    assert meta["test_accuracy"] > 0.4  # 4 classes: it learned
    assert len(Run(reference).history()["loss"]) == EPOCHS
    # One process with one device: the same batches and steps, summed in another order (Adam
    # turns the last-bit differences of tiny gradients into small steps of their own).
    assert Run(single).meta()["distributed"] == {"processes": 1, "devices": 1}
    assert _largest_difference(reference, single) < 0.05
    a, b = (np.concatenate([w.ravel() for w in _weights(r)]) for r in (reference, single))
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.01


@pytest.mark.slow
def test_a_dead_process_stops_the_other_and_one_process_resumes(
    runs: Path, reference: Path
) -> None:
    """Process 1 killed mid-epoch: the launcher ends process 0 within the bound (stuck in a
    collective, it is killed in turn: both are gone, as when a machine is lost) with one line
    that names process 1; then one process with two devices resumes the run bit for bit."""
    launcher = _launch(runs, "one-dies", "--grace", "4")
    run = runs / "one-dies"
    _wait_mid_epoch(run, launcher)
    _workers(launcher)[1].kill()
    killed = time.monotonic()
    _, err = launcher.communicate(timeout=120)
    took = time.monotonic() - killed
    assert launcher.returncode == 1
    assert took < 15, f"the survivor ended {took:.0f} s after the kill"
    errors = [line for line in err.splitlines() if line.startswith("cnnkit: error")]
    assert errors == [err.strip().splitlines()[-1]], err
    assert "process 1 of 2 was killed by SIGKILL" in errors[0] and "--resume" in errors[0]
    assert saved_position(Run(run).state_path) != (0, 0)  # the last commit is intact
    # One process with two devices: the same global batches, split and summed as by two.
    resumed = _cnnkit("train", "--resume", str(run), env=TWO_DEVICES)
    assert resumed.returncode == 0, resumed.stderr
    meta = Run(run).meta()
    assert meta["status"] == "complete" and len(meta["resumes"]) == 1
    assert list(Run(run).history()["epoch"]) == list(range(EPOCHS))
    assert _largest_difference(reference, run) == 0.0
