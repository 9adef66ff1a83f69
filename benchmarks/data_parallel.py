"""Data-parallel training on this machine: images/s and how far the weights drift apart.

    python benchmarks/data_parallel.py [--rounds 2] [--epochs 3] [--json FILE] [key=value ...]
    python benchmarks/data_parallel.py --smoke [--json FILE] [key=value ...]

Trains the same run (default: the smoke preset at a quarter of the network's widths, 2,000
CIFAR-10 images when the archive is at ../shared/data or CNNKIT_DATA_DIR, else the generated
images) as

- ``jax 1 process, 1 device``: ``train.distribute=data_parallel`` alone;
- ``jax 1 process, 2 devices``: the same with XLA_FLAGS=--xla_force_host_platform_device_count=2
  (two virtual CPU devices: the split and the all-reduce of two devices, in one process);
- ``jax 2 processes``: ``cnnkit launch --nproc 2`` (two processes on 127.0.0.1, gloo between them);
- ``tensorflow 1 process``: the default engine, for scale.

Configurations alternate, round after round; a configuration's speed is the median over rounds
of its median training images/s over the epochs after the first (which compiles). The largest
absolute difference between final weights is printed for each pair of JAX runs of the first
round. On a 2-core CPU no speed-up is expected: both "devices" share the same two cores. The
runs go to a temporary folder, the JSON to ``--json`` (default:
benchmarks/results/data_parallel.json).

``--configs`` picks some of them (``'jax 2 processes;tensorflow 1 process'``). ``--smoke``: one
JAX configuration and TensorFlow's for 1 round of 1 epoch on 320 of the generated images
(never the CIFAR-10 archive), with the tutorial's CNN cut to one group of 4 filters (XLA's
compilation is most of a JAX process's time), to check that the benchmark still works; the JSON
goes to a temporary folder unless ``--json`` says where.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

CONFIGS = {
    "jax 1 process, 1 device": ({"KERAS_BACKEND": "jax"}, 1, True),
    "jax 1 process, 2 devices": (
        {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, 1, True,
    ),
    "jax 2 processes": ({"KERAS_BACKEND": "jax"}, 2, True),
    "tensorflow 1 process": ({"KERAS_BACKEND": "tensorflow"}, 1, False),
}  # fmt: skip
# --smoke: one short round on a few generated images (a check that everything runs). What XLA
# compiles is kept small, one group of filters: 15 s a JAX process here instead of 38 s. (The
# augmentation stays: Keras's RandomRotation and RandomTranslation cannot be jit-compiled, so
# JAX runs the step op by op, as in the full benchmark.)
SMOKE = {
    "rounds": 1,
    "epochs": 1,
    "json": None,
    "configs": "jax 1 process, 1 device;tensorflow 1 process",
}
SMOKE_SETTINGS = [
    "data.train_subset=320", "data.test_subset=80", "model.params.filters=[4]",
    "model.params.dense=8",
]  # fmt: skip


def train(name: str, runs: Path, settings: list[str]) -> Path:
    env, processes, distributed = CONFIGS[name]
    args = ["train", "--preset", "smoke", "--runs-dir", str(runs), *settings,
            f"name={name.replace(' ', '-').replace(',', '')}"]  # fmt: skip
    if processes > 1:
        command = ["launch", "--nproc", str(processes), "--", *args]
    else:
        command = [*args, *(["train.distribute=data_parallel"] if distributed else [])]
    result = subprocess.run([sys.executable, "-m", "cnnkit", *command], capture_output=True,
                            text=True, env={**os.environ, **env})  # fmt: skip
    if result.returncode:
        raise SystemExit(f"{name} failed:\n{result.stderr[-2000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def speed(run: Path) -> float:
    from cnnkit.runs import Run

    rows = Run(run).history()["train_images_per_second"]
    return float(statistics.median(rows[1:] or rows))


def weights(run: Path) -> list[np.ndarray]:
    from cnnkit.runs import Run

    return list(Run(run).load_model().get_weights())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", default="benchmarks/results/data_parallel.json")
    parser.add_argument(
        "--configs", default=";".join(CONFIGS),
        help="the configurations to run, separated by ';' (default: all four; --smoke: the "
        "cheapest JAX one and TensorFlow's: the multi-process paths are tests/test_distributed.py's)",
    )  # fmt: skip
    parser.add_argument("settings", nargs="*", help="key=value for every run")
    parser.add_argument("--smoke", action="store_true", help="tiny runs, seconds: does it run?")
    args = parser.parse_args()
    if args.smoke:  # the smoke sizes become the defaults: what is given still wins
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
        args.json = args.json or f"{tempfile.mkdtemp(prefix='cnnkit-smoke-')}/data_parallel.json"
    configs = [name.strip() for name in args.configs.split(";") if name.strip()]
    unknown = [name for name in configs if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration {unknown[0]!r}; choose from: {'; '.join(CONFIGS)}")
    from cnnkit.env import cpu_model
    from cnnkit.runs import Run

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    data = os.environ.get("CNNKIT_DATA_DIR") or (str(shared) if shared.is_dir() else None)
    data = None if args.smoke else data  # the smoke runs never read the archive
    # The tutorial's CNN at a quarter of its widths: on a 2-core CPU, XLA's in-process all-reduce
    # of two virtual devices stalled past its 40 s timeout with the full widths (both devices'
    # programs compete for the same two cores); this size ran. See docs/benchmarks/distributed.md.
    settings = [
        f"train.epochs={args.epochs}",
        "report.enabled=false",
        "model.params.filters=[8,16,32]",
        "model.params.dense=128",
        *(SMOKE_SETTINGS if args.smoke else []),
        *args.settings,
    ]
    if data:
        os.environ["CNNKIT_DATA_DIR"] = data
    else:
        settings.insert(0, "data.name=synthetic")
    speeds: dict[str, list[float]] = {name: [] for name in configs}
    first: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for name in configs:
                run = train(name, Path(folder) / f"round{round_}", settings)
                speeds[name].append(speed(run))
                first.setdefault(name, run)
                print(f"round {round_ + 1}: {name}: {speeds[name][-1]:.1f} images/s", flush=True)
        jax_runs = [name for name in configs if name.startswith("jax")]
        loaded = {name: weights(first[name]) for name in jax_runs}
        differences = {
            f"{a} vs {b}": max(float(np.abs(x - y).max())
                               for x, y in zip(loaded[a], loaded[b], strict=True))
            for i, a in enumerate(jax_runs) for b in jax_runs[i + 1 :]
        }  # fmt: skip
        accuracy = {name: Run(first[name]).meta()["test_accuracy"] for name in configs}

    rows: list[dict[str, Any]] = [
        {"configuration": name, "train_images_per_second": round(statistics.median(v), 1),
         "runs": [round(s, 1) for s in v], "test_accuracy_round_1": accuracy[name]}
        for name, v in speeds.items()
    ]  # fmt: skip
    print(f"\n{'configuration':<26} {'train img/s':>11}  runs")
    for row in rows:
        print(f"{row['configuration']:<26} {row['train_images_per_second']:>11.1f}  {row['runs']}")
    print("\nlargest weight difference after training (round 1):")
    for pair, value in differences.items():
        print(f"  {pair}: {value:.3g}")
    record = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
        "settings": settings, "data": data or "synthetic", "rounds": args.rounds,
        "statistic": "median over rounds of the median over epochs after the first",
        "rows": rows, "largest_weight_difference": differences,
    }  # fmt: skip
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"JSON in {out}")


if __name__ == "__main__":
    main()
