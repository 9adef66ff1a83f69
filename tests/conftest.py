"""Shared fixtures. Tests never download: CNNKIT_OFFLINE is set and the user cache is a temp folder.

Two ways to run a verb: :func:`cli` calls the command's own entry point (``cnnkit.cli.main``)
in this process, so that the test pays for TensorFlow's start-up once per session; :func:`run_cli`
starts a real ``cnnkit`` process, for what only a process shows (start-up, signals, kills, a
server, what the command prints before Python's own streams exist). Each verb has at least one
real-process test (in test_cli.py or the test file of its module).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

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
# uses a fixture that does, is marked slow. Both are enforced: the trained fixtures at collection,
# and any in-process training while a quick test runs.
TRAINED_FIXTURES = {"digits_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        trained = TRAINED_FIXTURES & set(getattr(item, "fixturenames", ()))
        if trained and item.get_closest_marker("slow") is None:
            raise pytest.UsageError(
                f"{item.nodeid} uses {', '.join(sorted(trained))}, which trains: mark it slow "
                f"(or use untrained_run)"
            )


@pytest.fixture(autouse=True)
def _quick_tier_trains_nothing(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if request.node.get_closest_marker("slow") is not None:
        return
    from cnnkit import trainer

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{request.node.nodeid} trains a model: mark it @pytest.mark.slow")

    monkeypatch.setattr(trainer, "fit", refuse)


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
    return subprocess.run(
        [sys.executable, "-m", "cnnkit", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


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
    """A digits run folder as ``train`` leaves one (config.yaml, run.json, env.json,
    model.keras), written by the same writers, holding a network that was never trained: for the
    quick tier's tests of what the verbs refuse or print, which never look at how good the model
    is (the quick tier trains nothing)."""
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
