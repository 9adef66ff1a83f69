"""cnnkit tune: search the config with Optuna (trials are run folders); cnnkit tune show STUDY."""

from __future__ import annotations

import argparse
import json
from typing import Any

EXTRAS = "overrides"  # where stray positionals after an option go


def add_parser(verbs: Any) -> argparse.ArgumentParser:
    from cnnkit.config import list_presets
    from cnnkit.tuning import DEFAULT_PRUNER, PRUNERS

    parser: argparse.ArgumentParser = verbs.add_parser(
        "tune",
        help="search hyperparameters (Optuna); several workers may share a study",
        description=(
            "Search the settings in --space around a config (defaults < --preset < --config < "
            "key=value), one run folder per trial in DIR/STUDY/trial-N, objective: train.monitor "
            "on the validation split. Run the same command in several terminals (or machines, "
            "with --storage postgresql://...) to search in parallel; run it again to continue. "
            "`cnnkit tune show STUDY_FOLDER` prints the trials and the best config. "
            "The study folder is the last line printed."
        ),
        epilog="A space file, for example:  train.learning_rate: {low: 1e-4, high: 1e-2, "
        "log: true}   train.batch_size: {low: 32, high: 256, log: true}   "
        "train.optimizer: [adam, adamw]",
    )
    parser.add_argument("--space", metavar="FILE", help="the search space (YAML)")
    parser.add_argument("--preset", choices=list_presets(), help="the base recipe")
    parser.add_argument("--config", metavar="FILE", help="a YAML file of base settings")
    parser.add_argument(
        "--trials", type=int, default=20,
        help="stop when the study holds this many finished trials (default: 20)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, metavar="S", help="start no trial after S seconds")
    parser.add_argument("--study", metavar="NAME", help="the study (default: the space's name)")
    parser.add_argument(
        "--storage", metavar="URL",
        help="an Optuna storage URL shared by workers on several machines, e.g. "
        "postgresql://user:password@host/db (default: DIR/STUDY/study.db, SQLite)",
    )  # fmt: skip
    parser.add_argument(
        "--pruner", choices=PRUNERS, default=DEFAULT_PRUNER,
        help="stop trials that fall behind after an epoch (default: median)",
    )  # fmt: skip
    parser.add_argument(
        "--runs-dir", metavar="DIR", default="runs", help="where the study folder goes"
    )
    parser.add_argument(
        "--heartbeat", type=int, default=60, metavar="S",
        help="seconds between a worker's signs of life; a trial silent for 3 of them is "
        "taken as dead and continued by another worker (default: 60)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="tune show: print JSON")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value",
        help="base settings, e.g. train.budget=120; or: show STUDY_FOLDER",
    )  # fmt: skip
    return parser


def run(args: argparse.Namespace) -> int:
    from cnnkit.errors import CnnkitError

    if args.overrides[:1] == ["show"]:
        if len(args.overrides) != 2:
            raise CnnkitError("usage: cnnkit tune show STUDY_FOLDER [--storage URL] [--json]")
        from cnnkit.tuning import describe_study

        _quiet_optuna()
        _print(describe_study(args.overrides[1], args.storage), args.json)
        return 0
    if not args.space:
        raise CnnkitError("cnnkit tune needs --space FILE (or: cnnkit tune show STUDY_FOLDER)")
    if args.json:
        raise CnnkitError("--json goes with cnnkit tune show STUDY_FOLDER")
    from cnnkit.config import load_config
    from cnnkit.tuning import tune

    config = load_config(args.preset, args.config, args.overrides)
    _quiet_optuna()
    result = tune(
        args.space, config, trials=args.trials, timeout=args.timeout, study=args.study,
        storage=args.storage, pruner=args.pruner, runs_dir=args.runs_dir,
        heartbeat=args.heartbeat,
    )  # fmt: skip
    _print(result, False)
    return 0


def _quiet_optuna() -> None:
    """Optuna's own INFO lines would repeat what cnnkit says about each trial."""
    import importlib.util

    if importlib.util.find_spec("optuna"):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)


def _print(result: Any, as_json: bool) -> None:
    from cnnkit.comparison import text_table

    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return
    if result.trials:
        print(text_table(result.rows()))
        print()
    counts = ", ".join(f"{n} {state}" for state, n in sorted(result.counts().items()))
    print(f"study {result.name}: {counts or 'no trials'}; {result.monitor}, {result.direction}")
    if result.best is not None:
        print(f"best: trial {result.best.number}, {result.monitor} {result.best.value:.4f}, "
              f"{result.best.run}")  # fmt: skip
        for key, value in result.best.params.items():
            print(f"  {key}={value}")
        print(f"best config: {result.best_config}")
    print(f"study page: {result.page}")
    print(result.folder)
