"""The tuned settings against the tutorial's own, each trained with the same time budget on
several seeds, on the real CIFAR-10: the answer to the tutorial's "tune the hyperparameters next".

    python benchmarks/tuned_vs_tutorial.py --best runs/seed-120/best.yaml [--budget 120]
        [--seeds 3] [--out DIR] [key=value ...]
    python benchmarks/tuned_vs_tutorial.py --smoke [--best FILE] [--out DIR]

For each seed, alternating: ``cnnkit train --preset seed train.budget=B seed=S`` (the tutorial)
and ``cnnkit train --config BEST train.budget=B seed=S`` (the study's best.yaml), one at a time
in this process (data found as cnnkit finds it: ``CNNKIT_DATA_DIR`` or the cache). Reports each
run's test accuracy, the mean and standard deviation per side, and the gap; writes
``tuned_vs_tutorial.json`` under ``--out`` (default: benchmarks/results).

``--smoke``: the same code with one seed, no budget (``train.budget=0``: 1 epoch each) and the
generated ``synthetic`` images (``data.name=synthetic``: no download, no CIFAR-10), in seconds,
to check that the benchmark still works. Without ``--best`` it writes a best.yaml of its own
(the seed preset at another learning rate, as ``cnnkit tune`` writes one) beside its output,
which goes to a temporary folder unless ``--out`` says where.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

# --smoke: two tiny runs on the generated images (a check that everything runs, not a measurement);
# no budget: its speed probe alone takes seconds.
SMOKE = {"budget": 0.0, "seeds": 1, "out": None}
SMOKE_OVERRIDES = ["data.name=synthetic", "train.epochs=1"]  # before the ones given


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--best", help="the study's best.yaml (needed, except with --smoke)")
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("overrides", nargs="*", help="key=value for both sides")
    parser.add_argument("--smoke", action="store_true", help="tiny runs, seconds: does it run?")
    args = parser.parse_args()
    if args.smoke:  # the smoke sizes become the defaults: what is given still wins
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
        args.out = args.out or tempfile.mkdtemp(prefix="cnnkit-smoke-")
    elif not args.best:
        parser.error("--best FILE is needed (a study's best.yaml)")

    import cnnkit

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.best:  # smoke: a best.yaml as cnnkit tune writes it, the seed preset retuned
        tuned = cnnkit.load_config("seed", overrides=["train.learning_rate=0.001"])
        args.best = out / "best.yaml"
        args.best.write_text("# --smoke's stand-in for a study's best trial\n" + tuned.to_yaml())
    sides = {"tutorial": ("seed", None), "tuned": ("", args.best)}
    smoke = SMOKE_OVERRIDES if args.smoke else []
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for label, (preset, file) in sides.items():
                overrides = [*smoke, *args.overrides, f"train.budget={args.budget}",
                             f"seed={seed}", f"name={label}", "report.enabled=false"]  # fmt: skip
                config = cnnkit.load_config(preset, file, overrides)
                run = cnnkit.train(config, runs_dir=tmp, verbose=0)
                meta = run.meta()
                row = {
                    "side": label,
                    "seed": seed,
                    "test_accuracy": meta["test_accuracy"],
                    "val_accuracy": run.history()["val_accuracy"][-1],
                    "train_seconds": meta["train_seconds"],
                    "budget": meta.get("budget"),
                }
                print(json.dumps(row), flush=True)
                runs.append(row)
    summary = {}
    for label in sides:
        accuracies = [float(r["test_accuracy"]) for r in runs if r["side"] == label]  # type: ignore[arg-type]
        summary[label] = {
            "mean": round(statistics.mean(accuracies), 4),
            "std": round(statistics.stdev(accuracies), 4) if len(accuracies) > 1 else 0.0,
            "accuracies": accuracies,
        }
    summary["gap_points"] = round(100 * (summary["tuned"]["mean"] - summary["tutorial"]["mean"]), 2)
    record = {"budget": args.budget, "best": str(args.best), "runs": runs, "summary": summary}
    (out / "tuned_vs_tutorial.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
