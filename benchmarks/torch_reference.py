"""The fast recipe's training step in cnnkit (Keras) against the same network in plain PyTorch.

    python benchmarks/torch_reference.py --torch-python PATH [--repeats 3] [--steps 6] [--batch 1024]

Issue 4's time target (505 s a run) was measured with a public PyTorch implementation of
airbench94 on this kind of machine, on another day; this machine's speed changes from day to day
(1.8x between two days, same run and seed), so what means something is the same network trained
by both frameworks in one run. PyTorch is not a dependency of cnnkit: pass the interpreter of an
environment that has it, e.g.

    python -m venv /tmp/torch && /tmp/torch/bin/pip install torch==2.13.0 numpy

Each repeat runs one fresh worker process per framework, alternating, so that a noisy neighbour
slows both alike. A worker trains ``--steps`` steps of ``--batch`` random images after two
warm-up steps and reports the median step: Keras runs cnnkit's ``fast_cnn`` with the ``fast``
preset's optimizer, in mixed_bfloat16, through ``fit`` (the in-graph augmentation of the preset
is numpy-side and left out); PyTorch runs the same network (2x2 whitening conv with 24 filters,
three groups 64/256/256 of conv-pool-BatchNorm-GELU-conv-BatchNorm-GELU, max-pool, linear, x 1/9)
written here, with Nesterov SGD, ``torch.autocast(bfloat16)`` and channels_last, as airbench does.
Prints both medians in images/s and their ratio; ``--json`` keeps the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def keras_worker(batch: int, steps: int) -> list[float]:
    import numpy as np

    from cnnkit.config import load_config
    from cnnkit.env import import_keras
    from cnnkit.models import create_model
    from cnnkit.optim import create_optimizer
    from cnnkit.trainer import _StepTimer, adapt_layers

    keras = import_keras()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    cfg = load_config("fast")
    rng = np.random.default_rng(0)
    n = batch * (steps + 2)
    x = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, size=n)]
    net = create_model("fast_cnn", (32, 32, 3), 10)
    adapt_layers(net, x)
    net.compile(
        optimizer=create_optimizer(cfg.train, steps + 2, net),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing),
    )
    timer = _StepTimer()
    net.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    return list(timer.seconds[2:])


def torch_worker(batch: int, steps: int) -> list[float]:
    import torch
    from torch import nn

    torch.manual_seed(0)

    def group(channels_in: int, channels_out: int) -> list[nn.Module]:
        def norm() -> nn.Module:
            layer = nn.BatchNorm2d(channels_out, momentum=0.4, eps=1e-12)
            layer.weight.requires_grad = False
            return layer

        return [
            nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False), nn.MaxPool2d(2),
            norm(), nn.GELU(approximate="tanh"),
            nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False), norm(),
            nn.GELU(approximate="tanh"),
        ]  # fmt: skip

    class Scale(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x / 9

    net = nn.Sequential(
        nn.Conv2d(3, 24, 2), nn.GELU(approximate="tanh"), *group(24, 64), *group(64, 256),
        *group(256, 256), nn.MaxPool2d(3), nn.Flatten(), nn.Linear(256, 10, bias=False), Scale(),
    ).to(memory_format=torch.channels_last)  # fmt: skip
    net[0].weight.requires_grad = False
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.85, nesterov=True, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2, reduction="none")
    x = torch.randint(0, 256, (batch, 3, 32, 32)).float().div(255)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    seconds = []
    for step in range(steps + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(net(x), y).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:
            seconds.append(time.perf_counter() - start)
    return seconds


def run_worker(python: str, framework: str, batch: int, steps: int) -> float:
    """Median images/s of one fresh worker process."""
    command = [
        python,
        __file__,
        "--worker",
        framework,
        "--batch",
        str(batch),
        "--steps",
        str(steps),
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("SECONDS ")]
    if done.returncode or not lines:
        raise SystemExit(f"{framework} worker failed:\n{done.stderr[-2000:]}")
    seconds = json.loads(lines[-1].removeprefix("SECONDS "))
    return batch / statistics.median(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--torch-python", help="an interpreter whose environment has torch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--json", default="benchmarks/results/torch_reference.json")
    parser.add_argument("--worker", choices=["keras", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        work = keras_worker if args.worker == "keras" else torch_worker
        print("SECONDS " + json.dumps(work(args.batch, args.steps)), flush=True)
        return 0
    if not args.torch_python:
        parser.error("--torch-python PATH is needed (an interpreter with torch installed)")

    rates: dict[str, list[float]] = {"keras": [], "torch": []}
    for repeat in range(args.repeats):
        rates["keras"].append(run_worker(sys.executable, "keras", args.batch, args.steps))
        rates["torch"].append(run_worker(args.torch_python, "torch", args.batch, args.steps))
        print(
            f"repeat {repeat + 1}/{args.repeats}: cnnkit (Keras) {rates['keras'][-1]:,.0f} img/s, "
            f"PyTorch {rates['torch'][-1]:,.0f} img/s",
            flush=True,
        )
    keras_rate, torch_rate = (statistics.median(rates[k]) for k in ("keras", "torch"))
    print(
        f"\nfast_cnn training, batch {args.batch}, bf16, medians of {args.repeats}: cnnkit "
        f"{keras_rate:,.0f} img/s, PyTorch {torch_rate:,.0f} img/s: cnnkit at "
        f"{keras_rate / torch_rate:.2f}x PyTorch's speed"
    )
    record = {
        "machine": {"processor": platform.processor(), "cores": os.cpu_count()},
        "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
        "keras_images_per_second": [round(v, 1) for v in rates["keras"]],
        "torch_images_per_second": [round(v, 1) for v in rates["torch"]],
        "ratio_of_medians": round(keras_rate / torch_rate, 3),
    }  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
