"""Calibration on real runs: the test numbers before and after the temperature, what vector
scaling would add, how many held-out images the temperature needs, and what holding them out
costs the fast recipe in accuracy.

    python benchmarks/calibration.py --train --runs-dir RUNS [--seeds 3] [--budget 120]
    python benchmarks/calibration.py --runs-dir RUNS [--out docs/benchmarks/data/calibration]
    python benchmarks/calibration.py --smoke --runs-dir RUNS [--train] [--out DIR]

``--train`` first trains, one at a time, for each seed: ``cnnkit train --preset fast
train.budget=B`` (calibrated on its calibration split, `data.calibration_split`), the same with
``train.calibrate=false`` (every training image trains: the split's cost in accuracy), and
``cnnkit train --preset seed train.budget=B`` (calibrated on its validation split); then one
``fast`` run holding out 10 % (``data.calibration_split=0.1``) as a pool for the size study.
The data is found as cnnkit finds it (``CNNKIT_DATA_DIR`` or the cache).

Then, from each run folder's metrics.json and predictions.npz (the held-out images' and the test
set's probabilities before calibration):
- accuracy, negative log-likelihood, ECE and Brier on the test set, before and after;
- the calibration cnnkit fits on them (``cnnkit.calibration.calibrate``: a temperature, or
  vector scaling where it beats the temperature on held-out folds), and each of the two alone,
  on the test set; and the temperature fitted on the test set itself (the best a temperature
  can do there);
- the size study: the temperature refitted on stratified samples of 100..5,000 of the held-out
  images (20 draws each), and the test ECE and NLL each gives.
Runs are found as RUNS/LABEL/RUN/metrics.json, one group per LABEL. Writes ``calibration.json``
under ``--out`` (default: benchmarks/results) and prints the tables.

``--smoke``: the same code in seconds, to check that the benchmark still works: the size study
with 100 images and 2 draws; with ``--train``, one seed of each run on the generated
``synthetic`` images (``data.name=synthetic``: no download, no CIFAR-10), 1 epoch, no budget,
no report page. On any runs laid out as above, e.g. RUNS/digits/RUN from ``cnnkit train
--preset smoke data.name=digits``. The JSON goes to a temporary folder unless ``--out`` says
where; it exits non-zero when RUNS holds no run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SIZES = (100, 250, 500, 1000, 2000, 5000)
DRAWS = 20
# --smoke: the smallest study, and tiny runs (a check that everything runs, not a measurement).
SMOKE = {"seeds": 1, "budget": 0.0, "out": None}
SMOKE_SIZES, SMOKE_DRAWS = (100,), 2
SMOKE_TRAIN = ["data.name=synthetic", "train.epochs=1", "report.enabled=false"]


def train(runs: Path, seeds: int, budget: float, extra: tuple[str, ...] = ()) -> None:
    """Train every run of the study into RUNS/LABEL/, one at a time; ``extra``: more overrides."""
    specs = [
        ("fast", "fast", []),
        ("fast-raw", "fast", ["train.calibrate=false"]),
        ("seed", "seed", []),
    ]
    for seed in range(seeds):
        for label, preset, more in specs:
            overrides = [f"train.budget={budget:g}", f"seed={seed}", *more, *extra]
            _train(runs / label, preset, overrides, f"s{seed}")
    pool = [f"train.budget={budget:g}", "seed=0", "data.calibration_split=0.1", *extra]
    _train(runs / "fast-pool", "fast", pool, "s0")


def _train(folder: Path, preset: str, overrides: list[str], name: str) -> None:
    command = [sys.executable, "-m", "cnnkit", "train", "--preset", preset, "--runs-dir",
               str(folder), f"name={name}", *overrides]  # fmt: skip
    print(" ".join(command[2:]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def analyse(
    run: Path, rng_seed: int = 0, sizes: tuple[int, ...] = SIZES, draws: int = DRAWS
) -> dict[str, Any]:
    from cnnkit import analysis
    from cnnkit.calibration import (
        apply_scaling,
        apply_temperature,
        brier_score,
        calibrate,
        fit_temperature,
        fit_vector,
        negative_log_likelihood,
    )
    from cnnkit.runs import Run

    folder = Run(run)
    meta, metrics, arrays = folder.meta(), folder.metrics(), folder.prediction_arrays()
    record: dict[str, Any] = {
        "run": str(run), "seed": folder.config().seed, "budget": meta.get("budget"),
        "train_images": meta["dataset"]["train"], "train_seconds": meta.get("train_seconds"),
        "test_accuracy": metrics["test"]["accuracy"],
    }  # fmt: skip
    if "uncalibrated" not in arrays:
        return record
    labels, raw = arrays["labels"], arrays["uncalibrated"]
    held, held_labels = arrays["held_out_probabilities"], arrays["held_out_labels"]

    def numbers(p: np.ndarray) -> dict[str, float]:
        return {
            "accuracy": float(np.mean(p.argmax(axis=1) == labels)),
            "nll": negative_log_likelihood(p, labels),
            "ece": analysis.calibration(p, labels).ece,
            "brier": brier_score(p, labels),
        }

    # What cnnkit's calibration (as of this script) fits on the run's held-out predictions:
    # the same call train makes after training, on the probabilities the run saved.
    fitted = calibrate(held, held_labels, metrics["calibration"]["source"])
    t = fitted.temperature
    scale, bias = fit_vector(held, held_labels, t)
    record.update(
        temperature=t, method=fitted.method, folds=fitted.folds, held_out=len(held_labels),
        source=fitted.source, before=numbers(raw), after=numbers(fitted.apply(raw)),
        temperature_only=numbers(apply_temperature(raw, t)),
        vector_only=numbers(apply_scaling(raw, scale, bias)),
        # The floor of a temperature: the one that minimises the test set's own NLL.
        test_fitted_temperature=numbers(apply_temperature(raw, fit_temperature(raw, labels))),
    )  # fmt: skip

    from sklearn.model_selection import train_test_split

    study: dict[str, Any] = {}
    for size in sizes:
        if size >= len(held_labels):
            continue
        ece, nll, temps = [], [], []
        for draw in range(draws):
            chosen, _ = train_test_split(np.arange(len(held_labels)), train_size=size,
                                         stratify=held_labels, random_state=rng_seed + draw)  # fmt: skip
            fitted = fit_temperature(held[chosen], held_labels[chosen])
            after = apply_temperature(raw, fitted)
            temps.append(fitted)
            ece.append(analysis.calibration(after, labels).ece)
            nll.append(negative_log_likelihood(after, labels))
        study[str(size)] = {
            "ece_median": statistics.median(ece), "ece_max": max(ece),
            "nll_median": statistics.median(nll), "nll_max": max(nll),
            "temperature_min": min(temps), "temperature_max": max(temps),
        }  # fmt: skip
    record["sizes"] = study
    return record


def _summary(records: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in records if key in r]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} +- {statistics.stdev(values):.4f}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs-dir", required=True, type=Path)
    parser.add_argument("--train", action="store_true", help="train the runs first")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: does it run?")
    args = parser.parse_args()
    if args.smoke:  # the smoke sizes become the defaults: what is given still wins
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
        args.out = args.out or Path(tempfile.mkdtemp(prefix="cnnkit-smoke-"))
    if args.train:
        train(args.runs_dir, args.seeds, args.budget, tuple(SMOKE_TRAIN) if args.smoke else ())

    from cnnkit.env import describe

    groups: dict[str, list[dict[str, Any]]] = {}
    for run in sorted(p.parent for p in args.runs_dir.glob("*/*/metrics.json")):
        sizes, draws = (SMOKE_SIZES, SMOKE_DRAWS) if args.smoke else (SIZES, DRAWS)
        groups.setdefault(run.parent.name, []).append(analyse(run, sizes=sizes, draws=draws))
    for label, records in groups.items():
        print(f"\n{label}: {len(records)} run(s)")
        print(f"  test accuracy {_summary(records, 'test_accuracy')}")
        for side in ("before", "after", "temperature_only", "vector_only",
                     "test_fitted_temperature"):  # fmt: skip
            rows = [r[side] for r in records if side in r]
            if rows:
                cells = "  ".join(f"{k} {_summary(rows, k)}" for k in rows[0])
                print(f"  {side:<24} {cells}")
        for r in records:
            if "temperature" in r:
                print(f"  seed {r['seed']}: {r['method']}, T {r['temperature']:.4f} on "
                      f"{r['held_out']} ({r['source']}), folds {r['folds']}, "
                      f"{r['train_images']} training images")  # fmt: skip
            for size, s in r.get("sizes", {}).items():
                print(f"    {size:>5} held-out: test ECE median {s['ece_median']:.4f} (worst "
                      f"{s['ece_max']:.4f}), NLL median {s['nll_median']:.4f}, T "
                      f"{s['temperature_min']:.3f}..{s['temperature_max']:.3f}")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": describe().get("cpu"), "python": platform.python_version()}
    path = args.out / "calibration.json"
    path.write_text(json.dumps({"machine": machine, "runs": groups}, indent=2) + "\n")
    print(f"\n{path}")
    if args.smoke and not groups:
        print(f"no run found in {args.runs_dir} (RUNS/LABEL/RUN/metrics.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
