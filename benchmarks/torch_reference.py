"""The fast recipe's training step in cnnkit (Keras) against the same network in plain PyTorch.

    python benchmarks/torch_reference.py --torch-python PATH [--precision fp32|bf16] [--eigen]
                                         [--model fast_cnn|seed_cnn] [--repeats 3] [--steps 6]
                                         [--batch 1024] [--json FILE]
    python benchmarks/torch_reference.py --torch-python PATH --smoke [--json FILE]

Issue 4's time target (505 s a run) was measured with a public PyTorch implementation of
airbench94 on this kind of machine, on another day; this machine's speed changes from day to day
(1.8x between two days, same run and seed), so what means something is the same network trained
by both frameworks in one run. PyTorch is not a dependency of cnnkit: pass the interpreter of an
environment that has it, e.g.

    python -m venv /tmp/torch && /tmp/torch/bin/pip install torch==2.13.0 numpy

Each repeat runs one fresh worker process per framework, alternating, so that a noisy neighbour
slows both alike. A worker trains ``--steps`` steps of ``--batch`` random images after two
warm-up steps and reports the median step: Keras runs cnnkit's ``fast_cnn`` with the ``fast``
preset's optimizer through cnnkit's own speed probe (``cnnkit.trainer.measure_speed``, what
``train.budget`` measures; it times whole passes over four batches, so at least ``--steps``
steps), without augmentation (the fast preset's is array operations between epochs); PyTorch
runs the same network (2x2 whitening conv with 24 filters, three groups 64/256/256 of
conv-pool-BatchNorm-GELU-conv-BatchNorm-GELU, max-pool, linear, x 1/9) written here, with
Nesterov SGD and channels_last, as airbench does. ``--model seed_cnn``: the tutorial's
network instead (cnnkit's ``seed_cnn`` with the ``seed`` preset's Adam 1e-4, and the same layers in
PyTorch with Adam 1e-4).

``--precision``: bf16 (Keras's mixed_bfloat16 against ``torch.autocast(bfloat16)``; fast only on
CPUs with AMX or AVX512-BF16) or fp32 (both in float32; any CPU). Default: bf16 where the CPU has
bf16 instructions, else fp32. ``--eigen`` adds a third worker, cnnkit with TensorFlow's oneDNN
kernels off (``TF_ENABLE_ONEDNN_OPTS=0``: what TensorFlow does by itself on CPUs without
AVX512-VNNI/BF16 or AMX), so that the gain of turning oneDNN on is measured in the same run.
Prints the medians in images/s and the ratios; ``--json`` keeps the numbers (default:
benchmarks/results/torch_reference.json).

``--smoke``: the same workers and JSON at the smallest sizes (batch 8, 2 steps, 1 repeat, unless
given), in seconds, to check that the benchmark still works; the JSON goes to a temporary folder
unless ``--json`` says where. Exits non-zero when a worker fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANSWER = "IMAGES_PER_SECOND "  # the line a worker prints its result on
# --smoke: tiny sizes (a check that everything runs, not a measurement).
SMOKE = {"batch": 8, "steps": 2, "repeats": 1, "json": None}


def keras_worker(batch: int, steps: int, precision: str, model: str) -> float:
    """Training images/s of cnnkit's network, timed by cnnkit's own speed probe (what
    ``train.budget`` measures): the median step after two warm-up steps."""
    import numpy as np

    import cnnkit
    from cnnkit.data import Split
    from cnnkit.env import import_keras
    from cnnkit.trainer import adapt_layers, measure_speed

    keras = import_keras()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    keras.utils.set_random_seed(0)
    # No augmentation layers: PyTorch's side has none (the fast preset's crops and flips are
    # array operations between epochs anyway; the seed preset's would run in the graph).
    cfg = cnnkit.load_config(
        "fast" if model == "fast_cnn" else "seed",
        overrides=[f"train.batch_size={batch}", "augment.enabled=false"],
    )
    rng = np.random.default_rng(0)
    n = batch * (steps + 2)  # one epoch of the optimizer's schedule: steps + 2 batches
    train = Split(rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
                  rng.integers(0, 10, size=n))  # fmt: skip

    def build() -> object:
        net = cnnkit.create_model(model, (32, 32, 3), 10)
        adapt_layers(net, train.x)
        return net

    # No time limit: the probe stops after whole passes over its four batches, so at least
    # ``steps`` steps are timed after the two warm-up steps.
    return measure_speed(build, train, 10, cfg.train, cfg.augment, float("inf"), max_steps=steps)


def torch_seed_cnn() -> tuple[object, object]:
    """The tutorial's network (cnnkit's seed_cnn) and its optimizer (Adam 1e-4) in PyTorch."""
    import torch
    from torch import nn

    layers: list[nn.Module] = []
    width_in = 3
    for width in (32, 64, 128):
        layers += [nn.Conv2d(width_in, width, 3, padding=1), nn.ReLU(),
                   nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                   nn.Dropout(0.25)]  # fmt: skip
        width_in = width
    net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 4 * 4, 512), nn.ReLU(),
                        nn.Dropout(0.5), nn.Linear(512, 10))  # fmt: skip
    return net, torch.optim.Adam(net.parameters(), lr=1e-4)


def torch_worker(batch: int, steps: int, precision: str, model: str) -> float:
    """Training images/s of the same network in PyTorch: the median step after two warm-up steps."""
    import contextlib

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
    if model == "seed_cnn":
        net, optimizer = torch_seed_cnn()  # type: ignore[assignment]
        net = net.to(memory_format=torch.channels_last)
        loss_fn = nn.CrossEntropyLoss(reduction="none")
    x = torch.randint(0, 256, (batch, 3, 32, 32)).float().div(255)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    seconds = []
    for step in range(steps + 2):
        start = time.perf_counter()
        cast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())  # fmt: skip
        with cast:
            loss = loss_fn(net(x), y).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 2:
            seconds.append(time.perf_counter() - start)
    return batch / statistics.median(seconds)


def run_worker(
    python: str, framework: str, batch: int, steps: int, precision: str, model: str
) -> float:
    """Training images/s of one fresh worker process."""
    command = [python, __file__, "--worker", framework, "--batch", str(batch), "--steps",
               str(steps), "--precision", precision, "--model", model]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    if framework == "keras-eigen":
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(ANSWER)]
    if done.returncode or not lines:
        raise SystemExit(f"{framework} worker failed:\n{done.stderr[-2000:]}")
    return float(lines[-1].removeprefix(ANSWER))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--torch-python", help="an interpreter whose environment has torch")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 where the "
                        "CPU has bf16 instructions (AMX, AVX512-BF16), else fp32")  # fmt: skip
    parser.add_argument("--eigen", action="store_true",
                        help="also time cnnkit with oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)")  # fmt: skip
    parser.add_argument("--model", choices=["fast_cnn", "seed_cnn"], default="fast_cnn",
                        help="fast_cnn (the fast preset's) or seed_cnn (the tutorial's, with "
                        "Adam)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--json", default="benchmarks/results/torch_reference.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: does it run?")
    parser.add_argument(
        "--worker", choices=["keras", "keras-eigen", "torch"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.smoke:  # the smoke sizes become the defaults: what is given still wins
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
        args.json = args.json or f"{tempfile.mkdtemp(prefix='cnnkit-smoke-')}/torch_reference.json"
    if args.precision is None:
        from cnnkit.env import cpu_has_bf16

        args.precision = "bf16" if cpu_has_bf16() else "fp32"
    if args.worker:
        work = torch_worker if args.worker == "torch" else keras_worker
        print(f"{ANSWER}{work(args.batch, args.steps, args.precision, args.model)!r}", flush=True)
        return 0
    if not args.torch_python:
        parser.error("--torch-python PATH is needed (an interpreter with torch installed)")

    workers = {"keras": sys.executable, "torch": args.torch_python}
    if args.eigen:
        workers["keras-eigen"] = sys.executable
    rates: dict[str, list[float]] = {name: [] for name in workers}
    for repeat in range(args.repeats):
        for name, python in workers.items():  # alternating, a fresh process each
            rates[name].append(
                run_worker(python, name, args.batch, args.steps, args.precision, args.model)
            )
        print(f"repeat {repeat + 1}/{args.repeats}: "
              + ", ".join(f"{name} {rates[name][-1]:,.0f} img/s" for name in workers), flush=True)  # fmt: skip
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"\n{args.model} training, batch {args.batch}, {args.precision}, medians of {args.repeats}: "
        + ", ".join(f"{name} {rate:,.0f} img/s" for name, rate in medians.items())
        + f"; cnnkit at {medians['keras'] / medians['torch']:.2f}x PyTorch's speed"
        + (
            f", {medians['keras'] / medians['keras-eigen']:.2f}x its speed with oneDNN off"
            if args.eigen
            else ""
        )
    )
    from cnnkit.env import cpu_flags, cpu_model

    record = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                    "bf16": bool({"amx_bf16", "avx512_bf16"} & cpu_flags()),
                    "avx512": "avx512f" in cpu_flags()},
        "model": args.model, "precision": args.precision, "batch": args.batch, "steps": args.steps,
        "repeats": args.repeats,
        "images_per_second": {name: [round(v, 1) for v in values] for name, values in rates.items()},
        "ratio_of_medians": round(medians["keras"] / medians["torch"], 3),
        **({"onednn_gain": round(medians["keras"] / medians["keras-eigen"], 3)} if args.eigen else {}),
    }  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
