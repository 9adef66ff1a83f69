"""Training and inference images/s of every registered model, fp32 and bf16, with FLOP/s.

    python benchmarks/throughput.py [--repeats 5] [--steps 12] [--json FILE]
    python benchmarks/throughput.py --backends tensorflow,jax,torch [--rounds 2] [--repeats 2]
    python benchmarks/throughput.py --smoke [--backends tensorflow] [--json FILE]

Each model is trained as its preset trains it (seed_cnn: the `seed` recipe at batch 256, as the
issue asks; fast_cnn: the `fast` recipe at its batch of 1024), including the augmentation layers
that run in the training graph. A repeat is one Keras fit of ``--steps`` steps; its speed is
the batch size over the median step time after two warm-up steps, so tracing and data set-up are
left out. Configurations are interleaved (repeat 1 of each, then repeat 2, ...) so that a noisy
neighbour slows them alike; medians over repeats are printed, bf16 as a ratio to the same model's
fp32, and achieved training FLOP/s (3 x forward FLOPs x images/s) against a bf16 matmul peak
measured in the same run. Input is random uint8 32x32x3 images: speed does not depend on content.

``--backends``: the same measurement (fp32 only) on each Keras backend, each in a process of its
own (the backend is chosen when Keras is imported), backends alternating round after round;
medians over all repeats of all rounds. Network, optimizer, augmentation and data are the same:
only the engine differs.

The JSON goes to ``--json`` (default: benchmarks/results/throughput.json). ``--smoke``: the same
code at the smallest sizes (batch 8, 3 steps, 1 repeat and round, a 256x256 matmul), in seconds,
to check that the benchmark still works (with ``--backends``, each backend's process runs its
smoke mode); the JSON goes to a temporary folder unless ``--json`` says where.
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
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.config import load_config
from cnnkit.env import backend_name, cpu_model, import_keras, set_random_seed

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}
SETUPS = [("seed_cnn", "seed", 256), ("fast_cnn", "fast", 1024)]
# --smoke: tiny sizes (a check that everything runs, not a measurement); every model at batch 8.
SMOKE = {"steps": 3, "repeats": 1, "rounds": 1, "json": None}
SMOKE_BATCH = 8
SMOKE_MATMUL = 256


def matmul_peak(keras: Any, size: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of a square bf16 matmul: the most this CPU's bf16 units give a real kernel."""
    a = keras.ops.ones((size, size), dtype="bfloat16")

    def product() -> Any:  # waits for the result: a scalar of it, as float32
        return keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.matmul(a, a)[0, 0], "float32"))

    product()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=12, help="training steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="benchmarks/results/throughput.json")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated")
    parser.add_argument("--backends", help="comma-separated Keras backends, each in its process")
    parser.add_argument("--rounds", type=int, default=2, help="with --backends")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: does it run?")
    args = parser.parse_args()
    if args.smoke:  # the smoke sizes become the defaults: what is given still wins
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
        args.json = args.json or f"{tempfile.mkdtemp(prefix='cnnkit-smoke-')}/throughput.json"
    if args.backends:
        compare_backends(args)
        return

    keras = import_keras()
    from cnnkit.data.augment import create_augmenter
    from cnnkit.models import count_flops, create_model
    from cnnkit.optim import create_optimizer
    from cnnkit.trainer import _StepTimer, adapt_layers, training_model

    rng = np.random.default_rng(0)
    configs: list[dict[str, Any]] = []
    for name, preset, batch in SETUPS:
        batch = SMOKE_BATCH if args.smoke else batch
        cfg = load_config(preset)
        n = batch * args.steps
        x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=n)]
        for label, policy in POLICIES.items():
            if label not in args.precisions.split(","):
                continue
            set_random_seed(0)
            keras.mixed_precision.set_global_policy(policy)
            net = create_model(name, (32, 32, 3), 10)
            adapt_layers(net, x)
            model = training_model(net, create_augmenter(cfg.augment, 0))
            model.compile(
                optimizer=create_optimizer(cfg.train, args.steps, net),
                loss=keras.losses.CategoricalCrossentropy(
                    label_smoothing=cfg.train.label_smoothing
                ),
            )
            configs.append({"model": name, "preset": preset, "precision": label, "batch": batch,
                            "net": net, "fit": model, "x": x, "y": y, "flops": count_flops(net),
                            "train": [], "infer": []})  # fmt: skip
    peak = matmul_peak(keras, size=SMOKE_MATMUL if args.smoke else 4096)

    for repeat in range(args.repeats):
        for c in configs:
            timer = _StepTimer(warmup=2, seconds=float("inf"), min_steps=args.steps)
            c["fit"].fit(c["x"], c["y"], batch_size=c["batch"], epochs=1, verbose=0, shuffle=False,
                         callbacks=[timer])  # fmt: skip
            c["train"].append(c["batch"] / statistics.median(timer.seconds[2:]))
            start = time.perf_counter()
            c["net"].predict(c["x"], batch_size=1000, verbose=0)
            c["infer"].append(len(c["x"]) / (time.perf_counter() - start))
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)

    rows = []
    seed_bf16 = None
    for c in configs:
        base = next(b for b in configs if b["model"] == c["model"] and b["precision"] == "fp32")
        train = statistics.median(c["train"])
        row = {
            "model": c["model"], "preset": c["preset"], "precision": c["precision"],
            "batch_size": c["batch"], "forward_mflop_per_image": round(c["flops"] / 1e6, 1),
            "train_images_per_second": round(train, 1), "train_runs": [round(v, 1) for v in c["train"]],
            "infer_images_per_second": round(statistics.median(c["infer"]), 1),
            "infer_runs": [round(v, 1) for v in c["infer"]],
            "train_vs_fp32": round(train / statistics.median(base["train"]), 2),
            "train_tflops": round(3 * c["flops"] * train / 1e12, 3),
        }  # fmt: skip
        row["share_of_matmul_peak"] = round(row["train_tflops"] * 1e12 / peak, 3)
        if c["model"] == "seed_cnn" and c["precision"] == "bf16":
            seed_bf16 = row["train_tflops"]
        rows.append(row)
    for row in rows:
        row["tflops_vs_seed_cnn_bf16"] = (
            round(row["train_tflops"] / seed_bf16, 2) if seed_bf16 else None
        )

    print(f"\nbf16 matmul peak measured in this run: {peak / 1e12:.2f} TFLOP/s")
    print(
        f"{'model':<10} {'prec':<5} {'batch':>5} {'MFLOP/img':>9} {'train img/s':>11} {'vs fp32':>7} "
        f"{'infer img/s':>11} {'train TFLOP/s':>13} {'of peak':>7} {'vs seed_cnn bf16':>16}"
    )
    for r in rows:
        print(
            f"{r['model']:<10} {r['precision']:<5} {r['batch_size']:>5} {r['forward_mflop_per_image']:>9.1f} "
            f"{r['train_images_per_second']:>11,.0f} {r['train_vs_fp32']:>6.2f}x "
            f"{r['infer_images_per_second']:>11,.0f} {r['train_tflops']:>13.3f} "
            f"{r['share_of_matmul_peak']:>6.0%} "
            + (f"{versus:>15.2f}x" if (versus := r["tflops_vs_seed_cnn_bf16"]) else f"{'-':>16}")
        )
    record = {
        "machine": machine(),
        "backend": backend_name(), "keras": keras.__version__, "steps": args.steps,
        "repeats": args.repeats, "statistic": "median", "matmul_peak_tflops": round(peak / 1e12, 3),
        "rows": rows,
    }  # fmt: skip
    out = write(record, args.json)
    print(f"\nmedians of {args.repeats} interleaved repeats; JSON in {out}")


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()}


def write(record: dict[str, Any], path: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out


def compare_backends(args: argparse.Namespace) -> None:
    """Train images/s of each model on each backend: one process per backend and round."""
    backends = args.backends.split(",")
    found: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(args.rounds):
            for backend in backends:
                out = Path(folder) / f"{backend}-{round_}.json"
                command = [
                    sys.executable,
                    __file__,
                    "--precisions",
                    "fp32",
                    "--steps",
                    str(args.steps),
                    "--repeats",
                    str(args.repeats),
                    "--json",
                    str(out),
                    *(["--smoke"] if args.smoke else []),
                ]
                env = {**os.environ, "KERAS_BACKEND": backend}
                subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
                for row in json.loads(out.read_text())["rows"]:
                    found.setdefault((backend, row["model"]), []).extend(row["train_runs"])
                print(f"round {round_ + 1}: {backend} done", flush=True)
    rows = [{"backend": b, "model": m, "train_images_per_second": round(statistics.median(v), 1),
             "runs": v} for (b, m), v in found.items()]  # fmt: skip
    print(f"\n{'backend':<11} {'model':<9} {'train img/s (fp32)':>18}  runs")
    for r in rows:
        print(
            f"{r['backend']:<11} {r['model']:<9} {r['train_images_per_second']:>18,.1f}  {r['runs']}"
        )
    record = {
        "machine": machine(),
        "steps": args.steps, "repeats_per_round": args.repeats, "rounds": args.rounds,
        "precision": "fp32", "statistic": "median", "rows": rows,
    }  # fmt: skip
    print(f"JSON in {write(record, args.json)}")


if __name__ == "__main__":
    main()
