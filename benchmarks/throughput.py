"""Training and inference images/s of every registered model, fp32 and bf16.

    python benchmarks/throughput.py [--batch-size 256] [--steps 40] [--repeats 5] [--json FILE]

Each configuration is timed ``--repeats`` times, interleaved (repeat 1 of every configuration,
then repeat 2, ...) so that a noisy neighbour slows all of them alike; the medians are printed,
with each model's bf16 figures as a ratio to its fp32 baseline measured in the same run.
"train+aug" is training exactly as cnnkit trains (augmentation layers in the training graph);
"train" is the bare network. Input is random uint8 32x32x3 images: speed does not depend on content.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.config import AugmentConfig, TrainConfig
from cnnkit.env import backend_name, cpu_model, import_keras

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}


def build(name: str, policy: str, augment: bool, shape: tuple[int, int, int], classes: int) -> Any:
    keras = import_keras()
    from cnnkit.data.augment import create_augmenter
    from cnnkit.models import create_model
    from cnnkit.trainer import create_optimizer, training_model

    keras.mixed_precision.set_global_policy(policy)
    net = create_model(name, shape, classes)
    augmenter = create_augmenter(AugmentConfig(), seed=0) if augment else None
    model = training_model(net, augmenter)
    model.compile(
        optimizer=create_optimizer(TrainConfig()),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return net, model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40, help="training steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="*", help="default: every registered model")
    parser.add_argument("--json", default="benchmarks/results/throughput.json")
    args = parser.parse_args()

    keras = import_keras()
    from cnnkit.models import list_models

    shape, classes, batch = (32, 32, 3), 10, args.batch_size
    rng = np.random.default_rng(0)
    n = batch * args.steps
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, size=n)]

    configs: list[dict[str, Any]] = []
    for name in args.models or list_models():
        for label, policy in POLICIES.items():
            keras.utils.set_random_seed(0)
            net, bare = build(name, policy, False, shape, classes)
            _, augmented = build(name, policy, True, shape, classes)
            for model in (bare, augmented):  # warm-up: graph tracing and oneDNN kernel selection
                model.fit(x[: batch * 3], y[: batch * 3], batch_size=batch, epochs=1, verbose=0)
            net.predict(x[: batch * 2], batch_size=512, verbose=0)
            configs.append(
                {
                    "model": name,
                    "precision": label,
                    "policy": policy,
                    "net": net,
                    "bare": bare,
                    "augmented": augmented,
                    "train": [],
                    "train_aug": [],
                    "infer": [],
                }
            )

    for repeat in range(args.repeats):
        for c in configs:
            for key, model in (("train", c["bare"]), ("train_aug", c["augmented"])):
                start = time.perf_counter()
                model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)
                c[key].append(n / (time.perf_counter() - start))
            start = time.perf_counter()
            c["net"].predict(x, batch_size=512, verbose=0)
            c["infer"].append(n / (time.perf_counter() - start))
        print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)

    rows = []
    for c in configs:
        base = next(b for b in configs if b["model"] == c["model"] and b["precision"] == "fp32")
        row = {"model": c["model"], "precision": c["precision"], "batch_size": batch}
        for key in ("train", "train_aug", "infer"):
            row[f"{key}_images_per_second"] = round(statistics.median(c[key]), 1)
            row[f"{key}_runs"] = [round(v, 1) for v in c[key]]
            row[f"{key}_vs_fp32"] = round(
                statistics.median(c[key]) / statistics.median(base[key]), 2
            )
        rows.append(row)

    print()
    print(
        f"{'model':<12} {'precision':<9} {'train img/s':>12} {'train+aug':>10} {'infer img/s':>12}"
        f"   ratios to fp32 (train, train+aug, infer)"
    )
    for r in rows:
        print(
            f"{r['model']:<12} {r['precision']:<9} {r['train_images_per_second']:>12,.0f} "
            f"{r['train_aug_images_per_second']:>10,.0f} {r['infer_images_per_second']:>12,.0f}"
            f"   {r['train_vs_fp32']:.2f}x {r['train_aug_vs_fp32']:.2f}x {r['infer_vs_fp32']:.2f}x"
        )
    record = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()},
        "backend": backend_name(),
        "keras": keras.__version__,
        "batch_size": batch,
        "steps": args.steps,
        "repeats": args.repeats,
        "statistic": "median",
        "rows": rows,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nmedians of {args.repeats} interleaved repeats of {n} images; JSON in {out}")


if __name__ == "__main__":
    main()
