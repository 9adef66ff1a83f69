"""Test accuracy against training wall-clock time, per preset, over several seeds, in one run.

    python benchmarks/time_to_accuracy.py [--target 0.7534] [--first-seed 0] [--spec LABEL:PRESET:SEEDS[:key=value,...]]...
    python benchmarks/time_to_accuracy.py --smoke [--out DIR]

Default specs: ``fast:fast:3`` (the default recipe), ``fast-2min:fast:3:train.budget=120`` (the
fast recipe scaled to two minutes of training) and ``seed:seed:1`` (the tutorial; one seed,
since one run takes about 40 minutes here). Every run trains on the real CIFAR-10 (found as
cnnkit finds it: ``CNNKIT_DATA_DIR``, ``data.path=`` in a spec, or the cache).

After each epoch a callback measures test accuracy (one plain pass, no test-time augmentation,
so a conservative figure) with the clock stopped: times run from the first epoch's start and
count training only (not loading, model building, a budget's speed calibration, or evaluation). A run's
final accuracy is cnnkit's own (``metrics.json``, with the preset's test-time augmentation) and
its total time is the whole ``cnnkit.train`` call (loading, building, training, evaluation)
less the probe's evaluations.
``--stop-at-target LABEL`` ends that spec's runs at the first epoch past the target (for the
tutorial's recipe, whose full 100 epochs are recorded in docs/benchmarks/data/seed-run/).
Prints, side by side, the time each spec needs to reach ``--target`` (the tutorial's 75.34 %) and
its final accuracy (mean and spread over seeds); writes JSON and one chart of accuracy against
time for all runs under ``--out`` (default: benchmarks/results), and for budget runs a chart of
what each budget chose.

``--smoke``: the same code on the generated ``synthetic`` images (no download, no CIFAR-10) with
one spec of one seed, ``smoke-budget`` (the smoke preset with ``train.budget=15``, no report
page), in seconds, to check that the benchmark still works; output goes to a temporary folder
unless ``--out`` says where. It exits non-zero when a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_SPECS = ["fast:fast:3", "fast-2min:fast:3:train.budget=120", "seed:seed:1"]
# --smoke: one short budget run on the generated images (a check that everything runs, not a
# measurement). 15 s: the budget's speed probe alone takes 4-7 s on a busy 2-core CPU, and a
# budget too short for it is an error.
SMOKE_SPECS = ["smoke-budget:smoke:1:data.name=synthetic,report.enabled=false,train.budget=15"]


def parse_spec(text: str) -> dict[str, Any]:
    parts = text.split(":", 3)
    if len(parts) < 3:
        raise SystemExit(f"--spec {text!r}: expected LABEL:PRESET:SEEDS[:key=value,...]")
    overrides = [o for o in parts[3].split(",") if o] if len(parts) == 4 else []
    return {"label": parts[0], "preset": parts[1], "seeds": int(parts[2]), "overrides": overrides}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spec", action="append", help="LABEL:PRESET:SEEDS[:key=value,...]")
    parser.add_argument("--target", type=float, default=0.7534)
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds run from this one (to add seeds later)"
    )
    parser.add_argument(
        "--out", help="default: benchmarks/results (with --smoke: a temporary folder)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny runs, seconds: does it run?")
    parser.add_argument(
        "--stop-at-target",
        action="append",
        default=[],
        metavar="LABEL",
        help="stop this spec's runs once they pass --target (their final accuracy is then the "
        "accuracy at that epoch, without TTA); for the long tutorial recipe",
    )
    parser.add_argument(
        "--from-json", metavar="FILE", help="print the table and draw the chart of a saved run"
    )
    args = parser.parse_args()
    if args.smoke:  # one short run, unless specs are given
        args.spec = args.spec or SMOKE_SPECS
    args.out = args.out or (
        tempfile.mkdtemp(prefix="cnnkit-smoke-") if args.smoke else "benchmarks/results"
    )
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        summarise(saved["runs"], saved["target"], Path(args.out))
        return 0
    specs = [parse_spec(s) for s in (args.spec or DEFAULT_SPECS)]

    import cnnkit
    from cnnkit.data import load_dataset
    from cnnkit.env import cpu_model, import_keras
    from cnnkit.errors import CnnkitError

    keras = import_keras()
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "keras": keras.__version__,
               "backend": keras.backend.backend()}  # fmt: skip

    class TargetReached(Exception):
        """Raised by the probe to end a run that only has to reach the target."""

    class TestAccuracy(keras.callbacks.Callback):  # type: ignore[misc]
        """Test accuracy after each epoch, with the time it took taken off the clock."""

        def __init__(self, x: np.ndarray, y: np.ndarray, stop_at: float | None = None) -> None:
            super().__init__()
            self.x, self.y, self.stop_at = x, y, stop_at
            self.start: float | None = None
            self.paused = 0.0
            self.points: list[tuple[float, float]] = []

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self.start is None:
                self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            assert self.start is not None
            now = time.perf_counter()
            elapsed = now - self.start - self.paused  # training so far, earlier evaluations out
            probabilities = self.model.predict(self.x, batch_size=1000, verbose=0)
            accuracy = float(np.mean(np.argmax(probabilities, axis=1) == self.y))
            self.paused += time.perf_counter() - now
            self.points.append((elapsed, accuracy))
            print(f"    epoch {epoch + 1}: {accuracy:.4f} at {elapsed:.0f} s", flush=True)
            if self.stop_at is not None and accuracy >= self.stop_at:
                raise TargetReached

    root = Path(tempfile.mkdtemp(prefix="cnnkit-tta-"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []

    def save() -> None:  # after every run, so that a long benchmark loses nothing if stopped
        (out / "time_to_accuracy.json").write_text(
            json.dumps(
                {"target": args.target, "machine": machine, "runs": results, "failed": failures},
                indent=2,
            )
        )

    for spec in specs:
        for seed in range(args.first_seed, args.first_seed + spec["seeds"]):
            config = cnnkit.load_config(
                spec["preset"], overrides=[*spec["overrides"], f"seed={seed}"]
            )
            data = load_dataset(config.data, config.seed)
            stops = spec["label"] in args.stop_at_target
            probe = TestAccuracy(data.test.x, data.test.y, args.target if stops else None)
            print(f"{spec['label']} seed {seed}:", flush=True)
            start = time.perf_counter()
            try:
                run = cnnkit.train(
                    config, runs_dir=root / spec["label"], verbose=0, callbacks=[probe]
                )
                meta = run.meta()
                final = json.loads(run.file("metrics.json").read_text())["test"]["accuracy"]
            except TargetReached:
                meta = {"epochs": len(probe.points), "stopped_at_target": True}
                final = probe.points[-1][1]
            except CnnkitError as exc:  # e.g. a budget too short for this machine: say, go on
                print(f"  failed: {exc}", flush=True)
                failures.append({"label": spec["label"], "seed": seed, "error": str(exc)})
                continue
            # The probe's own evaluations are not part of a run: take them off its total.
            total = time.perf_counter() - start - probe.paused
            reached = next((t for t, a in probe.points if a >= args.target), None)
            results.append({
                "label": spec["label"], "preset": spec["preset"], "overrides": spec["overrides"],
                "seed": seed, "epochs": meta["epochs"], "curve": probe.points,
                "train_seconds": probe.points[-1][0] if probe.points else None,
                "total_seconds": round(total, 1), "probe_seconds": round(probe.paused, 1),
                "eval_seconds": meta.get("eval_seconds"),
                "final_accuracy": final, "seconds_to_target": reached,
                "stopped_at_target": bool(meta.get("stopped_at_target")),
                "budget": meta.get("budget"),  # what train.budget chose (widths, epochs, speed)
            })  # fmt: skip
            print(
                f"  final {final:.4f} (tta {config.train.tta}), {total:.0f} s in all, "
                f"target reached at {reached if reached is None else round(reached)} s",
                flush=True,
            )
            save()

    summarise(results, args.target, out)
    return 1 if args.smoke and failures else 0


def summarise(results: list[dict[str, Any]], target: float, out: Path) -> None:
    """Print the side-by-side table and draw the chart."""
    print(
        f"\n{'spec':<11} {'seeds':>5} {'final accuracy':>18} {'to ' + f'{target:.2%}':>16} "
        f"{'training s':>11} {'total s':>8}"
    )
    for label in dict.fromkeys(r["label"] for r in results):  # in the order they ran
        runs = [r for r in results if r["label"] == label]
        finals = [r["final_accuracy"] for r in runs]
        reached = [r["seconds_to_target"] for r in runs if r["seconds_to_target"] is not None]
        spread = f" ± {statistics.stdev(finals):.2%}" if len(finals) > 1 else ""
        to_target = (
            f"{statistics.median(reached):.0f} s ({len(reached)}/{len(runs)})"
            if reached
            else "not reached"
        )
        stopped = "*" if any(r["stopped_at_target"] for r in runs) else ""
        print(
            f"{label + stopped:<11} {len(runs):>5} {statistics.mean(finals):>10.2%}{spread:<8} {to_target:>16} "
            f"{statistics.median(r['train_seconds'] for r in runs):>11.0f} "
            f"{statistics.median(r['total_seconds'] for r in runs):>8.0f}"
        )
    plot(results, target, out / "time_to_accuracy.png")
    budgeted = [r for r in results if r.get("budget")]
    if budgeted:
        print(f"\n{'spec':<11} {'seed':>4} {'budget s':>8} {'widths':>14} {'passes':>6} "
              f"{'epochs':>6} {'batch':>5} {'images/s':>8} {'used s':>6} {'final':>7}")  # fmt: skip
        for r in budgeted:
            b = r["budget"]
            widths = "x".join(map(str, b.get("widths", []))) or "(config's)"
            used = b["calibration_seconds"] + r["train_seconds"]
            print(
                f"{r['label']:<11} {r['seed']:>4} {b['seconds']:>8.0f} {widths:>14} "
                f"{b.get('passes', 0):>6.2f} {b['epochs']:>6} {b.get('batch_size', 0):>5} "
                f"{b['images_per_second']:>8.0f} {used:>6.0f} {r['final_accuracy']:>7.2%}"
            )
        plot_budgets(budgeted, target, out / "budget_family.png")
    print(
        f"\ncurves: test accuracy after each epoch without TTA; final: with the preset's TTA "
        f"(*: stopped once past the target, final = accuracy then, no TTA). JSON and chart in {out}"
    )


def plot_budgets(results: list[dict[str, Any]], target: float, path: Path) -> None:
    """Final test accuracy (with TTA) against the seconds each budget run took (measuring the
    speed, then training), each point named by the widths and epochs the budget chose."""
    fig, ax = _axes()
    for r in results:
        b = r["budget"]
        used = b["calibration_seconds"] + r["train_seconds"]
        ax.plot(used, 100 * r["final_accuracy"], "o", color="tab:blue")
        widths = "x".join(map(str, b.get("widths", []))) or "config's widths"
        ax.annotate(f"{widths}, {b['epochs']} ep", (used, 100 * r["final_accuracy"]),
                    textcoords="offset points", xytext=(4, -10), fontsize=7)  # fmt: skip
    ax.set_xlabel("seconds used: measuring the speed, then training (train.budget)")
    ax.set_ylabel("test accuracy (%), with TTA")
    ax.set_title("What train.budget buys: the fast network's family on this CPU")
    _finish(fig, ax, target, path)


def plot(results: list[dict[str, Any]], target: float, path: Path) -> None:
    fig, ax = _axes()
    colours: dict[str, str] = {}
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for r in results:
        first = r["label"] not in colours  # one legend entry per spec
        colour = colours.setdefault(r["label"], palette[len(colours) % len(palette)])
        times = [t / 60 for t, _ in r["curve"]]
        accuracies = [100 * a for _, a in r["curve"]]
        ax.plot(times, accuracies, marker="o", markersize=3, color=colour, alpha=0.85,
                label=r["label"] if first else None)  # fmt: skip
    ax.set_xlabel("training time (minutes, this 2-core CPU)")
    ax.set_ylabel("test accuracy (%), no TTA")
    ax.set_title("CIFAR-10 test accuracy against training time")
    ax.legend()
    _finish(fig, ax, target, path)


def _axes() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7.5, 4.6), dpi=120)


def _finish(fig: Any, ax: Any, target: float, path: Path) -> None:
    """The tutorial's accuracy as a line, a log time axis, a grid; then write and close."""
    import matplotlib.pyplot as plt

    ax.axhline(100 * target, color="grey", linestyle="--", linewidth=1)
    ax.text(0.01, 100 * target + 0.4, f"tutorial's {target:.2%}", color="grey", fontsize=8,
            transform=ax.get_yaxis_transform())  # fmt: skip
    ax.set_xscale("log")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
