"""The tuned settings against the tutorial's own, each trained with the same time budget on
several seeds, on the real CIFAR-10: the answer to the tutorial's "tune the hyperparameters next".

    python benchmarks/tuned_vs_tutorial.py --best runs/seed-120/best.yaml [--budget 120]
        [--seeds 3] [--out DIR] [key=value ...]

For each seed, alternating: ``cnnkit train --preset seed train.budget=B seed=S`` (the tutorial)
and ``cnnkit train --config BEST train.budget=B seed=S`` (the study's best.yaml), one at a time
in this process (data found as cnnkit finds it: ``CNNKIT_DATA_DIR`` or the cache). Reports each
run's test accuracy, the mean and standard deviation per side, and the gap; writes
``tuned_vs_tutorial.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--best", required=True, help="the study's best.yaml")
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("overrides", nargs="*", help="key=value for both sides")
    args = parser.parse_args()

    import cnnkit

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sides = {"tutorial": ("seed", None), "tuned": ("", args.best)}
    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for label, (preset, file) in sides.items():
                config = cnnkit.load_config(
                    preset, file, [*args.overrides, f"train.budget={args.budget}", f"seed={seed}",
                                   f"name={label}", "report.enabled=false"],
                )  # fmt: skip
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
