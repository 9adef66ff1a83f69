"""cnnkit tune: the space is checked before anything exists; workers share a study on SQLite and
on a real PostgreSQL server without running a trial twice; a worker killed mid-trial has its
trial continued from the dead trial's run folder; hopeless trials are pruned; the results (tune
show, best.yaml, study.html) are what a person can use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from browser import open_page
from cnnkit.config import load_config
from cnnkit.errors import ConfigError
from cnnkit.runs import Run
from cnnkit.tuning import parse_space
from conftest import cli, last_line, run_cli

# Trials that cost a start-up and a few seconds: the generated colours, the tutorial's network
# at a quarter of its widths, no report page.
BASE = [
    "--preset", "smoke", "data.name=synthetic", "train.batch_size=32", "report.enabled=false",
    "model.params.filters=[8,16,32]", "model.params.dense=64",
]  # fmt: skip
SPACE = (
    "train.learning_rate: {low: 3e-4, high: 3e-3, log: true}\nmodel.params.dropout: [0.0, 0.25]\n"
)


def _space(tmp_path: Path, text: str = SPACE, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- the space


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train.learnig_rate: {low: 1e-4, high: 1e-2}\n", "did you mean 'train.learning_rate'"),
        ("train.optimizer: {low: 1, high: 2}\n", "holds a string, not a number"),
        ("train.batch_size: {low: 16.5, high: 64}\n", "low and high must be whole"),
        ("train.learning_rate: {low: 1e-2, high: 1e-4}\n", "is empty"),
        ("train.learning_rate: {low: 0.01, high: 0.01}\n", "is empty"),
        ("train.learning_rate: {low: 0, high: 1, log: true}\n", "log-scale range needs low > 0"),
        ("train.optimizer: [adam, adamm]\n", "did you mean 'adam'"),
        ("train.learning_rate: {low: 1e-4, hihg: 1e-2}\n", "did you mean 'high'"),
        ("train.learning_rate: 0.01\n", "a fixed value goes on the command line"),
        ("data.val_split: {low: 0.1, high: 0.3}\n", "cannot be searched"),
        ("model.params.dropuot: [0.1, 0.2]\n", "has no parameter model.params.dropuot"),
        ("model.params: {low: 0, high: 1}\n", "searched one parameter at a time"),
        ("model.params: [1, 2]\n", "searched one parameter at a time"),
        ("train: {}\n", "unknown config key 'train'"),
        ("", "no parameter to search"),
        ("# nothing here\n", "no parameter to search"),
        ("[1, 2]\n", "must hold a mapping"),
    ],
)
def test_bad_space_is_one_line_and_creates_nothing(tmp_path: Path, text: str, message: str) -> None:
    space = _space(tmp_path, text)
    runs = tmp_path / "runs"
    result = cli("tune", "--space", str(space), "--runs-dir", str(runs), *BASE)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnkit: error:"), result.stderr
    assert message in lines[0]
    assert str(space) in lines[0] or "space file" in lines[0]
    assert not runs.exists()


def test_space_forms_become_optuna_distributions() -> None:
    base = load_config("seed")
    params = {
        p.key: p
        for p in parse_space(
            {
                "train": {"learning_rate": {"low": "1e-4", "high": 1e-2, "log": True}},
                "train.batch_size": {"low": 32, "high": 256, "step": 32},
                "train.optimizer": ["adam", "adamw"],
                "augment.rotation": {"low": 0, "high": 30},
                "model.params.dropout": {"low": 0.0, "high": 0.5},
                "augment.flip": [True, False],
            },
            base,
        )
    }
    assert params["train.learning_rate"].kind == "float" and params["train.learning_rate"].log
    assert params["train.batch_size"].kind == "int" and params["train.batch_size"].step == 32
    assert params["augment.rotation"].kind == "float"  # the key holds floats: 0..30 is a range
    assert params["train.optimizer"].choices == ("adam", "adamw")
    assert params["augment.flip"].choices == (True, False)
    assert params["train.batch_size"].distribution().high == 256
    assert params["train.batch_size"].contains(64) and not params["train.batch_size"].contains(65)
    with pytest.raises(ConfigError, match="must be in"):  # the config's own range: (0, 1e6]
        parse_space({"train.learning_rate": {"low": -1, "high": 1}}, base)


def test_arguments_and_storage_refused_before_anything_exists(tmp_path: Path) -> None:
    space, runs = _space(tmp_path), tmp_path / "runs"
    rate = _space(tmp_path, "train.learning_rate: [5.0, 11.5]\n", "rate.yaml")
    fast = cli("tune", "--space", str(rate), "--runs-dir", str(runs), "--preset", "fast")
    assert fast.returncode == 2 and "data.val_split=0.1" in fast.stderr
    secret = "postgresql://cnnkit:s3cret@127.0.0.1:1/nothing"
    refused = cli("tune", "--space", str(space), "--runs-dir", str(runs), "--storage", secret,
                  *BASE)  # fmt: skip
    assert refused.returncode == 2 and "cannot open the study storage" in refused.stderr, (
        refused.stderr
    )
    assert "s3cret" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    none = cli("tune", "show", str(tmp_path))
    assert none.returncode == 2 and "holds no study" in none.stderr
    assert not runs.exists()


# ----------------------------------------------------------------------------- workers


def _worker(space: Path, runs: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "tune", "--space", str(space), "--runs-dir", str(runs),
         "--heartbeat", "2", *args, *BASE],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip


def _trials_run_by(output: str) -> set[int]:
    """The trials a worker ran, from its 'trial N: ...' result lines."""
    numbers = set()
    for line in output.splitlines():
        words = line.split()[1:] if line.startswith("cnnkit: trial ") else []
        if len(words) > 2 and words[2] in ("val_accuracy", "pruned:"):
            numbers.add(int(words[1].rstrip(":")))
    return numbers


def _two_workers(tmp_path: Path, trials: int, *args: str) -> tuple[Path, list[str]]:
    space, runs = _space(tmp_path), tmp_path / "runs"
    workers = [_worker(space, runs, "--trials", str(trials), "train.epochs=3", *args)
               for _ in range(2)]  # fmt: skip
    outputs = [w.communicate(timeout=400)[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    return runs / "space", outputs


def _check_shared_study(folder: Path, outputs: list[str], trials: int) -> None:
    """Every trial ran once, by one worker, into its own run folder."""
    first, second = (_trials_run_by(o) for o in outputs)
    assert first and second, "both workers ran trials"
    assert not first & second, f"trials run by both workers: {first & second}"
    assert first | second == set(range(trials))
    for n in range(trials):
        meta = Run(folder / f"trial-{n}").meta()
        assert meta["tune"]["trial"] == n and meta["tune"]["trials"] == [n]
        assert meta["status"] in ("complete", "pruned")
    assert not (folder / f"trial-{trials}").exists()


@pytest.fixture(scope="module")
def sqlite_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    return _two_workers(tmp_path_factory.mktemp("tune"), 5)


@pytest.mark.slow
def test_two_workers_share_a_sqlite_study(sqlite_study: tuple[Path, list[str]]) -> None:
    folder, outputs = sqlite_study
    _check_shared_study(folder, outputs, 5)
    assert last_line_of(outputs[0]) == folder and last_line_of(outputs[1]) == folder
    # Trial 0 is the base config's own settings (they lie in the space): the reference.
    assert Run(folder / "trial-0").meta()["tune"]["params"] == {
        "train.learning_rate": 1e-3,
        "model.params.dropout": 0.25,
    }


def last_line_of(output: str) -> Path:
    return Path(output.strip().splitlines()[-1])


@pytest.mark.slow
def test_show_best_config_and_page(sqlite_study: tuple[Path, list[str]], tmp_path: Path) -> None:
    folder, _ = sqlite_study
    shown = cli("tune", "show", str(folder), "--json")
    assert shown.returncode == 0, shown.stderr
    study = json.loads(shown.stdout)
    assert sum(study["counts"].get(s, 0) for s in ("complete", "pruned")) == 5
    best = study["best"]
    complete = [t for t in study["trials"] if t["state"] == "complete"]
    assert best["value"] == max(t["value"] for t in complete)
    kept = Run(Path(best["run"]))  # the value of the weights the run keeps (keep=best here)
    assert kept.meta()["kept"] == "best"
    assert best["value"] == kept.history()["val_accuracy"][kept.meta()["best_epoch"] - 1]
    # best.yaml is a config that train takes: the base settings with the best trial's values.
    config = load_config(None, folder / "best.yaml")
    assert config.train.learning_rate == best["params"]["train.learning_rate"]
    assert config.model.params["dropout"] == best["params"]["model.params.dropout"]
    assert config.data.name == "synthetic" and config.train.epochs == 3
    text = cli("tune", "show", str(folder))
    assert text.returncode == 0 and f"best: trial {best['number']}" in text.stdout
    assert "train.learning_rate=" in text.stdout and last_line(text) == folder
    # The page, as a browser shows it: history and importances drawn, every trial listed.
    page = open_page(folder / "study.html", screenshot="study.png")
    assert page.problems == [] and page.images >= 2
    assert "Parameter importances" in page.text and "trial-4" in page.text
    # A trial is an ordinary run: evaluate works on it.
    evaluated = cli("evaluate", best["run"])
    assert evaluated.returncode == 0, evaluated.stderr


# ----------------------------------------------------------------------------- crashes


def _running_trial(db: Path) -> tuple[int, int, Path] | None:
    """A running trial with a committed epoch: (number, worker pid, run folder)."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name="space", storage=f"sqlite:///{db}")
    except Exception:  # not created yet
        return None
    for t in study.get_trials(states=(TrialState.RUNNING,)):
        run = Path(t.user_attrs.get("run", "/nonexistent"))
        history = run / "history.csv"
        if history.is_file() and len(history.read_text().splitlines()) >= 2:
            return t.number, int(t.user_attrs["worker"].rsplit(":", 1)[1]), run
    return None


@pytest.mark.slow
def test_worker_killed_mid_trial_is_continued(tmp_path: Path) -> None:
    space, runs = _space(tmp_path), tmp_path / "runs"
    args = (
        "--trials",
        "3",
        "--pruner",
        "none",
        "train.epochs=8",
        "model.params.filters=[16,32,64]",
    )
    workers = [_worker(space, runs, *args) for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while (found := _running_trial(runs / "space" / "study.db")) is None:
            assert time.monotonic() < deadline, "no trial committed an epoch"
            time.sleep(0.1)
        killed, pid, folder = found
        os.kill(pid, signal.SIGKILL)
        survivor = next(w for w in workers if w.pid != pid)
        output = survivor.communicate(timeout=400)[0]
        assert survivor.returncode == 0, output[-3000:]
    finally:
        for w in workers:
            w.kill()
            w.wait()
    assert f"continues trial {killed}" in output
    meta = Run(folder).meta()
    assert meta["status"] == "complete" and len(meta["resumes"]) == 1
    assert meta["tune"]["trial"] == killed and len(meta["tune"]["trials"]) == 2
    assert len(Run(folder).history()["loss"]) == 8  # each epoch once
    shown = json.loads(cli("tune", "show", str(runs / "space"), "--json").stdout)
    states = {t["number"]: t["state"] for t in shown["trials"]}
    assert states[killed] == "failed"
    retry = next(t for t in shown["trials"] if t["retry_of"] == killed)
    assert retry["state"] == "complete" and retry["run"] == str(folder)
    assert shown["counts"]["complete"] == 3


@pytest.mark.slow
def test_hopeless_trials_are_pruned(tmp_path: Path) -> None:
    """After four good trials (the first: the base config's own rate, 1e-3), a learning rate of
    100 (the loss becomes NaN) and one of 1e-7 (finite, but it learns nothing) are pruned after
    their first epoch."""
    import cnnkit

    config = cnnkit.load_config("smoke", overrides=[*BASE[2:], "train.epochs=2"])
    runs = tmp_path / "runs"
    rates = [3e-3, 3e-3, 3e-3, 100.0, 1e-7]
    study = cnnkit.tune(
        {"train.learning_rate": {"low": 1e-7, "high": 100, "log": True}}, config, trials=6,
        study="lr", runs_dir=runs, heartbeat=2,
        enqueue=[{"train.learning_rate": rate} for rate in rates],
    )  # fmt: skip
    assert [t.params["train.learning_rate"] for t in study.trials] == [1e-3, *rates]
    assert [t.state for t in study.trials] == ["complete"] * 4 + ["pruned"] * 2
    diverged = Run(runs / "lr" / "trial-4").meta()
    assert diverged["status"] == "pruned" and diverged["pruned"]["reason"] == "diverged"
    slow = Run(runs / "lr" / "trial-5").meta()
    assert slow["status"] == "pruned" and slow["pruned"]["epoch"] == 1
    assert slow["pruned"]["pruner"] == "median" and study.trials[5].epochs == 1
    # A pruned trial keeps its checkpoint: it can be trained to the end like an interrupted run.
    resumed = cli("train", "--resume", str(runs / "lr" / "trial-5"))
    assert resumed.returncode == 0, resumed.stderr
    assert Run(runs / "lr" / "trial-5").meta()["status"] == "complete"
    # The study remembers its space: another one is refused, in one line, before any trial.
    other = _space(tmp_path, "train.learning_rate: [0.1, 0.2]\n", "lr.yaml")
    refused = cli("tune", "--space", str(other), "--runs-dir", str(runs), "--trials", "7",
                  "--preset", "smoke", *BASE[2:], "train.epochs=2")  # fmt: skip
    assert refused.returncode == 2 and "searches another space" in refused.stderr


# ----------------------------------------------------------------------------- PostgreSQL
# (the server: conftest's postgres fixture)


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path: Path, postgres: str) -> None:
    folder, outputs = _two_workers(tmp_path, 4, "--storage", postgres)
    _check_shared_study(folder, outputs, 4)
    assert not (folder / "study.db").exists()  # the study is on the server
    shown = run_cli("tune", "show", str(folder), "--storage", postgres, "--json")
    assert shown.returncode == 0, shown.stderr
    counts = json.loads(shown.stdout)["counts"]
    assert counts.get("complete", 0) + counts.get("pruned", 0) == 4
