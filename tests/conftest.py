"""Shared fixtures. Tests never download: CNNKIT_OFFLINE is set and the user cache is a temp folder.

Two ways to run a verb: :func:`cli` calls the command's own entry point (``cnnkit.cli.main``)
in this process, so that the test pays for TensorFlow's start-up once per session; :func:`run_cli`
starts a real ``cnnkit`` process, for what only a process shows (start-up, signals, kills, a
server, what the command prints before Python's own streams exist). Each verb has at least one
real-process test (in test_cli.py or the test file of its module).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import importlib.util
import io
import logging
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("CNNKIT_OFFLINE", "XDG_CACHE_HOME", "CNNKIT_DATA_DIR")}
    os.environ["CNNKIT_OFFLINE"] = "1"
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("CNNKIT_DATA_DIR", None)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _float32_policy() -> Iterator[None]:
    """In-process training sets a global mixed-precision policy; each test starts from float32."""
    if "keras" in sys.modules:
        sys.modules["keras"].mixed_precision.set_global_policy("float32")
    yield


# The quick tier (make test-quick, pytest -m "not slow") trains nothing: a test that trains, or
# uses a fixture that does, is marked slow. Enforced three ways: a quick test may not use a
# fixture that trains (at collection); nothing may train in this process while a quick test, or
# a fixture it set up, runs (cnnkit.trainer's fit and speed probe refuse); and a real cnnkit
# process that a quick test starts must not have trained (run_cli reads its output).
TRAINED_FIXTURES = {"digits_run", "reference", "trained", "cache_runs", "sqlite_study",
                    "two_phases", "checks", "ahead"}  # fmt: skip
_QUICK: dict[str, str | None] = {"test": None}  # the quick test now running, if one is


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        trained = TRAINED_FIXTURES & set(getattr(item, "fixturenames", ()))
        if trained and item.get_closest_marker("slow") is None:
            raise pytest.UsageError(
                f"{item.nodeid} uses {', '.join(sorted(trained))}, which trains: mark it slow "
                f"(or use untrained_run)"
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    # For the whole of a quick test: its fixtures' setup (session ones too), call and teardown.
    _QUICK["test"] = None if item.get_closest_marker("slow") else item.nodeid
    try:
        return (yield)
    finally:
        _QUICK["test"] = None


def _refuse_training(trainer: Any) -> None:
    """Make cnnkit.trainer's ways to train refuse while a quick test runs."""
    for name in ("fit", "measure_speed"):
        real = getattr(trainer, name)

        @functools.wraps(real)
        def guarded(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            if _QUICK["test"] is not None:
                raise AssertionError(f"{_QUICK['test']} trains a model: mark it @pytest.mark.slow")
            return _real(*args, **kwargs)

        setattr(trainer, name, guarded)


class _GuardTrainer(importlib.abc.MetaPathFinder):
    """Applies _refuse_training to cnnkit.trainer as it is imported, whenever that is (so that
    a quick test that imports nothing heavy still imports nothing heavy)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "cnnkit.trainer":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader

        class Guarded(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                loader.exec_module(module)
                _refuse_training(module)

        spec.loader = Guarded()
        return spec


if "cnnkit.trainer" in sys.modules:
    _refuse_training(sys.modules["cnnkit.trainer"])
else:
    sys.meta_path.insert(0, _GuardTrainer())


def shared_cifar() -> Path | None:
    """The real CIFAR-10 archive beside the checkout (../shared/data), if this machine has it."""
    for candidate in (
        os.environ.get("CNNKIT_TEST_CIFAR"),
        REPO.parent / "shared" / "data" / "cifar-10-python.tar.gz",
    ):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def _batch(rng: np.random.Generator, rows: int, label: str) -> bytes:
    # The official layout: bytes keys, uint8 (rows, 3072) data, a list of int labels, protocol 2.
    labels = [int(v) for v in np.arange(rows) % 10]
    rng.shuffle(labels)
    batch = {
        b"batch_label": label.encode(),
        b"labels": labels,
        b"data": rng.integers(0, 256, size=(rows, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(rows)],
    }
    return pickle.dumps(batch, protocol=2)


def cifar_members(rows: int = 30, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    members = {
        f"data_batch_{i}": _batch(rng, rows, f"training batch {i} of 5") for i in range(1, 6)
    }
    members["test_batch"] = _batch(rng, rows, "testing batch 1 of 1")
    members["batches.meta"] = pickle.dumps(
        {
            b"label_names": [n.encode() for n in names],
            b"num_cases_per_batch": rows,
            b"num_vis": 3072,
        },
        protocol=2,
    )
    return members


def write_cifar_archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture
def cifar_archive(tmp_path: Path) -> Path:
    """A small archive in the official python-version format (30 images per batch)."""
    return write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", cifar_members())


@dataclass(frozen=True)
class Result:
    """What a verb answered: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """``cnnkit ARGS`` through the command's entry point in this process: the same parsing,
    messages, one-line errors and exit statuses as the command, without a new Python."""
    from cnnkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    logger = logging.getLogger("cnnkit")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        stack.enter_context(_environment(env or {}))
        if cwd is not None:
            stack.enter_context(contextlib.chdir(cwd))
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's --help and usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        finally:
            logger.handlers[:], logger.level, logger.propagate = saved
    return Result(code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def last_line(result: Result | subprocess.CompletedProcess[str]) -> Path:
    """The run folder a ``train`` printed last."""
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``cnnkit ARGS`` in a fresh process, as a user would run it."""
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "cnnkit", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )
    # Keras's lines of a training epoch: "Epoch 1/2", "18/18 - 2s - 88ms/step - ...".
    trained = re.search(r"^(Epoch \d+/|\d+/\d+ - .*step)", done.stdout + done.stderr, re.M)
    if _QUICK["test"] is not None and trained:
        raise AssertionError(f"{_QUICK['test']} trains a model: mark it @pytest.mark.slow")
    return done


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One quick training run on the digits, shared by every test that only reads a run (and
    copies it before changing anything): evaluate, predict, report, compare, export, serve."""
    runs = tmp_path_factory.mktemp("runs")
    result = cli(
        "train",
        "--preset",
        "smoke",
        "--runs-dir",
        str(runs),
        # 15 epochs: enough for the tutorial's CNN to learn the digits (about 94 %), in seconds.
        "data.name=digits",
        "train.epochs=15",
        "augment.flip=false",
        "name=digits",
    )
    return last_line(result)


@pytest.fixture(scope="session")
def untrained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits run folder with what the verbs that read a run need (config.yaml, run.json,
    env.json, model.keras, written by the run folder's own writers), holding a network that was
    never trained (and so has no metrics, history or calibration): for the quick tier's tests of
    what the verbs refuse or print, which never look at how good the model is."""
    from cnnkit import env
    from cnnkit.config import load_config
    from cnnkit.data import load_dataset
    from cnnkit.models import create_model
    from cnnkit.runs import create_run, now, save_network

    config = load_config("smoke", overrides=["data.name=digits", "augment.flip=false"])
    data = load_dataset(config.data, config.seed)
    run = create_run(tmp_path_factory.mktemp("runs"), "untrained")
    run.write_config(config)
    run.update_meta(name=run.name, status="complete", created=now(), ended=now(),
                    dataset=data.summary(), classes=list(data.class_names),
                    input_shape=list(data.input_shape), model=config.model.name,
                    precision="float32", backend=env.backend_name(), epochs=0)  # fmt: skip
    run.write_env(env.describe())
    net = create_model(config.model.name, data.input_shape, data.num_classes)
    save_network(net, run.model_path)
    return run.path


@pytest.fixture
def files_snapshot() -> Callable[[Path], dict[str, bytes]]:
    def snapshot(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }

    return snapshot


def start_server(run: Path, *args: str) -> tuple[int, subprocess.Popen[str]]:
    """``cnnkit serve RUN ARGS`` as a real process on a free port, once it answers /health
    (a test fails with the server's own words if it does not start within 90 s)."""
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "serve", str(run), "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )  # fmt: skip
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return port, process
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"the server did not start: {process.communicate()[1][-2000:]}")
            time.sleep(0.3)


# What a test that needs PostgreSQL's server says where it is missing.
POSTGRES_MISSING = (
    "PostgreSQL's server is not installed: apt-get install postgresql "
    "(make test installs it when run as root)"
)


def postgres_bin() -> Path | None:
    """The folder of Debian's initdb and pg_ctl, or None where the package is absent."""
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server of its own on 127.0.0.1 (Debian's package, which `make test`
    installs) while the block runs; its URL. Skips the test where the package is absent."""
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip(POSTGRES_MISSING)
    data = Path(tempfile.mkdtemp(prefix="cnnkit-pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: as Debian's postgres user
        shutil.chown(data, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data / "db"), "-U", "cnnkit",
                    "--auth=trust"], check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data / "db"), "-o", options,
                    "-l", str(data / "log"), "-w", "start"], check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql://cnnkit@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data / "db"), "-m",
                        "immediate", "stop"], capture_output=True)  # fmt: skip
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[str]:
    """:func:`postgres_server` for the length of one test."""
    with postgres_server() as url:
        yield url
