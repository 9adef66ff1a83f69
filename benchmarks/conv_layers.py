"""Where a training step of ``fast_cnn`` goes: each 3x3 convolution's three passes, in TFLOP/s.

    python benchmarks/conv_layers.py [--batch 512] [--repeats 7] [--json FILE]
    python benchmarks/conv_layers.py --smoke [--json FILE]

The convolutions are nearly all of the network's arithmetic, and a training step runs each one
three times: forward, backward to its input (``Conv2DBackpropInput``) and backward to its
weights (``Conv2DBackpropFilter``). This times the three, in bf16 on TensorFlow's own kernels
(oneDNN on a CPU), for every 3x3 convolution shape of ``fast_cnn`` at 32x32 input, alone (one
at a time, medians of ``--repeats``), and sets them against a bare 4096x4096 bf16 matmul timed
in the same run, the most this machine's bf16 units give a large, simple kernel. TensorFlow
only: it calls the backend's raw ops, which is the point (no Keras around them). The JSON goes
to ``--json`` (default: benchmarks/results/conv_layers.json).

``--smoke``: the same code at the smallest sizes (batch 4, 1 repeat, a 256x256 matmul), in
seconds, to check that the benchmark still works; the JSON goes to a temporary folder unless
``--json`` says where.
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

# (height = width, input channels, output channels) of fast_cnn's 3x3 convolutions, in order.
LAYERS = [(31, 24, 64), (15, 64, 64), (15, 64, 256), (7, 256, 256), (7, 256, 256), (3, 256, 256)]
# --smoke: tiny sizes (a check that everything runs, not a measurement).
SMOKE = {"batch": 4, "repeats": 1, "json": None}
SMOKE_MATMUL = 256


def median_ms(function: Any, *args: Any, repeats: int) -> float:
    function(*args).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args).numpy()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default="benchmarks/results/conv_layers.json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: does it run?")
    args = parser.parse_args()
    if args.smoke:  # the smoke sizes become the defaults: what is given still wins
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
        args.json = args.json or f"{tempfile.mkdtemp(prefix='cnnkit-smoke-')}/conv_layers.json"

    from cnnkit.env import import_keras
    from throughput import matmul_peak  # this folder's script: the same peak, measured alike

    keras = import_keras()  # quiets TensorFlow's start-up lines, as cnnkit does
    import tensorflow as tf

    bf16, n = tf.bfloat16, args.batch
    side = SMOKE_MATMUL if args.smoke else 4096
    peak = matmul_peak(keras, size=side, repeats=args.repeats) / 1e12
    print(f"bf16 {side}x{side} matmul: {peak:.2f} TFLOP/s")
    print(
        f"{'layer':<18} {'GFLOP':>6} {'forward':>15} {'backward input':>15} {'backward weights':>17}"
    )
    rows = []
    total = {"forward": 0.0, "backward_input": 0.0, "backward_weights": 0.0}
    for size, c_in, c_out in LAYERS:
        x = tf.cast(tf.random.normal((n, size, size, c_in)), bf16)
        dy = tf.cast(tf.random.normal((n, size, size, c_out)), bf16)
        w = tf.cast(tf.random.normal((3, 3, c_in, c_out)), bf16)
        passes = {
            "forward": (tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME")), (x, w)),
            "backward_input": (
                tf.function(
                    lambda dy, w, s=(n, size, size, c_in): tf.raw_ops.Conv2DBackpropInput(
                        input_sizes=list(s), filter=w, out_backprop=dy, strides=[1, 1, 1, 1],
                        padding="SAME",
                    )
                ),
                (dy, w),
            ),
            "backward_weights": (
                tf.function(
                    lambda x, dy, s=(3, 3, c_in, c_out): tf.raw_ops.Conv2DBackpropFilter(
                        input=x, filter_sizes=list(s), out_backprop=dy, strides=[1, 1, 1, 1],
                        padding="SAME",
                    )
                ),
                (x, dy),
            ),
        }  # fmt: skip
        gflop = 2 * n * size * size * c_in * c_out * 9 / 1e9
        row: dict[str, Any] = {"size": size, "in": c_in, "out": c_out, "gflop": round(gflop, 2)}
        for name, (function, inputs) in passes.items():
            ms = median_ms(function, *inputs, repeats=args.repeats)
            row[f"{name}_ms"] = round(ms, 1)
            row[f"{name}_tflops"] = round(gflop / ms, 3)
            total[name] += ms
        rows.append(row)
        cells = [
            f"{row[f'{p}_ms']:>6.0f} ms {row[f'{p}_tflops']:>4.2f}"
            for p in ("forward", "backward_input", "backward_weights")
        ]
        label = f"{size}x{size} {c_in}->{c_out}"
        print(f"{label:<18} {gflop:>6.1f} {cells[0]:>15} {cells[1]:>15} {cells[2]:>17}")
    gflop_all = sum(r["gflop"] for r in rows)
    print(
        f"all {len(rows)} layers, batch {n}: forward {total['forward']:.0f} ms, backward to the "
        f"input {total['backward_input']:.0f} ms, to the weights {total['backward_weights']:.0f} ms "
        f"({gflop_all:.0f} GFLOP each pass; TFLOP/s "
        + ", ".join(f"{gflop_all / total[p]:.2f}" for p in total)
        + f"; matmul {peak:.2f})"
    )
    record = {
        "cores": os.cpu_count(), "batch": n, "repeats": args.repeats, "statistic": "median",
        "matmul_tflops": round(peak, 3), "layers": rows,
        "total_ms": {k: round(v, 1) for k, v in total.items()},
    }  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
