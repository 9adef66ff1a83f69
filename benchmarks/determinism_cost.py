"""What train.deterministic=true costs, and whether it delivers: identical results for one seed.

    python benchmarks/determinism_cost.py [--repeats 3] [--epochs 3] [--train-subset 10000]
                                          [key=value ...]
    python benchmarks/determinism_cost.py --smoke [key=value ...]

Trains the `seed` recipe on a stratified CIFAR-10 subset ``--repeats`` times with determinism off
and on, alternating (off, on, off, on, ...) so that machine noise hits both alike, and prints the
median training images/s of each (from run.json: the median over epochs) with the ratio, and
whether the repeats of each setting produced byte-identical metrics.json and equal weights.
Needs CIFAR-10 where cnnkit finds it (CNNKIT_DATA_DIR, data.path or the cache). The runs go to
a temporary folder; nothing is written elsewhere.

``--smoke``: the same code with one run of one epoch each way on 400 of the generated ``synthetic``
images (``data.name=synthetic``: no download, no CIFAR-10), in seconds, to check that the
benchmark still works (one run each: "identical" then says nothing).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# --smoke: one tiny run each way (a check that everything runs, not a measurement).
SMOKE = {"repeats": 1, "epochs": 1, "train_subset": 400}
SMOKE_OVERRIDES = ["data.name=synthetic", "report.enabled=false"]  # before the ones given


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-subset", type=int, default=10000)
    parser.add_argument("overrides", nargs="*", help="more key=value settings, e.g. data.path=...")
    parser.add_argument("--smoke", action="store_true", help="tiny runs, seconds: does it run?")
    args = parser.parse_args()
    if args.smoke:  # the smoke sizes become the defaults: what is given still wins
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cnnkit-det-"))
    runs: dict[bool, list[Path]] = {False: [], True: []}
    for repeat in range(args.repeats):
        for deterministic in (False, True):
            name = f"{'det' if deterministic else 'free'}{repeat}"
            command = [
                sys.executable, "-m", "cnnkit", "train", "--preset", "seed", "--runs-dir", str(root),
                f"name={name}", f"train.epochs={args.epochs}", f"data.train_subset={args.train_subset}",
                "data.test_subset=2000", f"train.deterministic={str(deterministic).lower()}",
                *(SMOKE_OVERRIDES if args.smoke else []), *args.overrides,
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr)
                return 1
            runs[deterministic].append(root / name)
            print(f"{name}: done", flush=True)

    from cnnkit.runs import METRICS_FILE, Run

    speeds = {}
    print(f"\n{'setting':<22} {'median train img/s':>18}  {'runs':<26} identical results")
    for deterministic, folders in runs.items():
        per_run = [Run(f).meta()["train_images_per_second"] for f in folders]
        speeds[deterministic] = statistics.median(per_run)
        metrics = {Run(f).file(METRICS_FILE).read_bytes() for f in folders}
        weights = [Run(f).load_model().get_weights() for f in folders]
        same_weights = all(
            all(np.array_equal(a, b) for a, b in zip(weights[0], w, strict=True))
            for w in weights[1:]
        )
        label = f"deterministic={str(deterministic).lower()}"
        shown = ", ".join(f"{v:,.0f}" for v in per_run)
        print(
            f"{label:<22} {speeds[deterministic]:>18,.0f}  {shown:<26} "
            f"metrics.json {'identical' if len(metrics) == 1 else 'DIFFER'}, "
            f"weights {'identical' if same_weights else 'DIFFER'}"
        )
    print(
        f"\ndeterministic / default speed: {speeds[True] / speeds[False]:.2f}x "
        f"({args.repeats} runs each, {args.epochs} epochs of {args.train_subset} images, batch 64)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
