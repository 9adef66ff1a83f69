"""Trials per hour of ``cnnkit tune`` with 1 and 2 workers on one study, and what the study's
storage costs per trial.

    python benchmarks/tune_throughput.py [--trials 8] [--repeats 2] [--postgres URL] [--out DIR]
    python benchmarks/tune_throughput.py --smoke [--postgres URL] [--out DIR]

1. Workers: a study of ``--trials`` short trials on the bundled digits (the smoke preset, 5
   epochs, no report page; a log-scale learning-rate range), run by 1 worker and then by 2
   ``cnnkit tune`` processes on the same SQLite study, alternating, ``--repeats`` times each.
   Reported: wall seconds from the first worker's start to the last one's end, trials per
   hour, and, from the 1-worker studies, the seconds a trial spends outside training (start,
   data, building, evaluation: the trial's Optuna duration minus its run's train_seconds).
   With 2 workers on 2 cores each worker is given one thread (TF_NUM_INTRAOP_THREADS=1,
   TF_NUM_INTEROP_THREADS=1), as the README advises; 1 worker keeps TensorFlow's default.
2. Storage: the Optuna calls one cnnkit trial makes (ask, a suggestion per parameter, two
   attributes, a report and a pruning question per epoch, tell, the heartbeat's first beat,
   the worker's stale-trial check and trial count), without training, timed per trial for an
   in-memory study, the SQLite file, and (with ``--postgres URL``) a PostgreSQL server.

Nothing else heavy may run meanwhile. Writes ``tune_throughput.json`` under ``--out`` (default:
benchmarks/results); the studies go to a temporary folder.

``--smoke``: the same code with studies of 1 trial of 1 epoch, 1 repeat, and 3 storage trials
per storage, in seconds, to check that the benchmark still works; the JSON goes to a temporary
folder unless ``--out`` says where.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SPACE = "train.learning_rate: {low: 3e-4, high: 3e-3, log: true}\n"
SETTINGS = ["--preset", "smoke", "data.name=digits", "train.epochs=5", "report.enabled=false"]
EPOCHS = 5
PARAMS = 8  # the README's seed-recipe space has eight
STORAGE_TRIALS = 40  # per storage, timed without training
# --smoke: the smallest studies (a check that everything runs, not a measurement).
SMOKE = {"trials": 1, "repeats": 1, "out": None}
SMOKE_SETTINGS = [*SETTINGS, "train.epochs=1"]
SMOKE_STORAGE_TRIALS = 3


def run_study(
    workers: int, trials: int, root: Path, settings: list[str] = SETTINGS
) -> dict[str, Any]:
    space = root / "space.yaml"
    space.write_text(SPACE)
    runs = root / f"runs-{workers}-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if workers > 1:
        env |= {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    start = time.perf_counter()
    command = [sys.executable, "-m", "cnnkit", "tune", "--space", str(space), "--runs-dir",
               str(runs), "--trials", str(trials), "--pruner", "none", "--heartbeat", "5",
               *settings]  # fmt: skip
    procs = [
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        for _ in range(workers)
    ]
    outputs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - start
    if any(p.returncode for p in procs):
        raise SystemExit(f"a worker failed: {outputs}")
    shown = subprocess.run(
        [sys.executable, "-m", "cnnkit", "tune", "show", str(runs / "space"), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    study = json.loads(shown.stdout)
    outside = []
    for t in study["trials"]:
        meta = json.loads((Path(t["run"]) / "run.json").read_text())
        outside.append(t["seconds"] - meta["train_seconds"])
    return {
        "workers": workers,
        "trials": len(study["trials"]),
        "wall_seconds": round(wall, 1),
        "trials_per_hour": round(3600 * len(study["trials"]) / wall, 1),
        "median_trial_seconds": round(statistics.median(t["seconds"] for t in study["trials"]), 2),
        "median_seconds_outside_training": round(statistics.median(outside), 2),
    }


def storage_cost(url: str | None, trials: int = STORAGE_TRIALS) -> dict[str, Any]:
    """Seconds per trial of the Optuna calls a cnnkit trial makes, with no training."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage: Any = None
    if url is not None:
        storage = RDBStorage(
            url, heartbeat_interval=60, grace_period=180,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
        )  # fmt: skip
    study = optuna.create_study(
        storage=storage, study_name=f"bench-{time.monotonic_ns()}", direction="maximize",
        sampler=optuna.samplers.TPESampler(constant_liar=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4),
    )  # fmt: skip

    def objective(trial: Any) -> float:
        for i in range(PARAMS):
            trial.suggest_float(f"p{i}", 1e-4, 1e-2, log=True)
        trial.set_user_attr("run", "/tmp/x")
        trial.set_user_attr("worker", "host:1")
        study.get_trials(deepcopy=False)  # the objective finds its own frozen trial
        for epoch in range(1, EPOCHS + 1):
            trial.report(0.5, epoch)
            trial.should_prune()
        return 0.5

    times = []
    for _ in range(trials):
        start = time.perf_counter()
        optuna.storages.fail_stale_trials(study)
        study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        study.optimize(objective, n_trials=1)
        times.append(time.perf_counter() - start)
    label = "memory" if url is None else url.split(":", 1)[0]
    return {"storage": label, "trials": trials,
            "median_ms_per_trial": round(1000 * statistics.median(times), 1),
            "last10_ms_per_trial": round(1000 * statistics.median(times[-10:]), 1)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--postgres", metavar="URL", help="also time a PostgreSQL storage")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true", help="tiny studies, seconds: does it run?")
    args = parser.parse_args()
    if args.smoke:  # the smoke sizes become the defaults: what is given still wins
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
        args.out = args.out or tempfile.mkdtemp(prefix="cnnkit-smoke-")
    settings = SMOKE_SETTINGS if args.smoke else SETTINGS
    storage_trials = SMOKE_STORAGE_TRIALS if args.smoke else STORAGE_TRIALS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    studies = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for workers in (1, 2):  # alternating, so that drift hits both
                result = run_study(workers, args.trials, Path(tmp), settings)
                result["repeat"] = repeat
                print(json.dumps(result), flush=True)
                studies.append(result)
        storages = [
            storage_cost(None, storage_trials),
            storage_cost(f"sqlite:///{tmp}/bench.db", storage_trials),
        ]
    if args.postgres:
        storages.append(storage_cost(args.postgres, storage_trials))
    for s in storages:
        print(json.dumps(s), flush=True)
    summary = {}
    for workers in (1, 2):
        rows = [s for s in studies if s["workers"] == workers]
        summary[f"{workers}_worker"] = {
            "median_trials_per_hour": statistics.median(r["trials_per_hour"] for r in rows),
            "median_wall_seconds": statistics.median(r["wall_seconds"] for r in rows),
        }
    record = {"settings": settings, "trials_per_study": args.trials, "studies": studies,
              "summary": summary, "storage": storages}  # fmt: skip
    (out / "tune_throughput.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
