"""Memory and speed of training on an image folder, per ``data.cache`` mode, side by side.

    python benchmarks/folder_memory.py [--images 20000] [--size 64] [--cache-mb 100]
                                       [--modes memory,disk,disk,none] [--preset seed] [--out DIR]
    python benchmarks/folder_memory.py --smoke [--out DIR]

Exports ``--images`` real CIFAR-10 training images as PNG files (DIR/<class>/), then trains one
epoch on that folder at ``data.image_size=--size`` once per mode, each in its own process, and
reads the process's peak resident memory (``peak_rss_mb`` in run.json: ru_maxrss) and its
training images/s. ``disk`` twice: the first run decodes the folder into the cache, the second
reuses it. Ratios are against the ``memory`` run of the same invocation. Pick ``--size`` and
``--images`` so that the decoded folder is larger than ``--cache-mb``: then ``disk`` and ``none``
must stay flat while ``memory`` grows with the folder. The folder and runs go to a temporary
folder, the JSON under ``--out`` (default: benchmarks/results).

``--smoke``: the same code with 200 of the generated ``synthetic`` images in place of CIFAR-10
(no download, no archive) at 32x32, one run in mode disk (the decoded cache), no report page, in
seconds, to check that the benchmark still works; the JSON goes to a temporary folder unless
``--out`` says where.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

# --smoke: tiny runs on the generated images (a check that everything runs, not a measurement).
SMOKE = {"images": 200, "size": 32, "modes": "disk", "out": None}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--cache-mb", type=int, default=100)
    parser.add_argument("--modes", default="memory,disk,disk,none")
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true", help="tiny runs, seconds: does it run?")
    args = parser.parse_args()
    if args.smoke:  # the smoke sizes become the defaults: what is given still wins
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
        args.out = args.out or tempfile.mkdtemp(prefix="cnnkit-smoke-")

    from cnnkit.config import DataConfig
    from cnnkit.data import load_dataset
    from cnnkit.runs import Run

    work = Path(tempfile.mkdtemp(prefix="cnnkit-folder-mem-"))
    source = "synthetic" if args.smoke else "cifar10"
    data = load_dataset(DataConfig(name=source, train_subset=args.images, val_split=0), 0)
    folder = work / "cifar-png"
    start = time.perf_counter()
    for i, (x, y) in enumerate(zip(data.train.x, data.train.y, strict=True)):
        target = folder / data.class_names[y]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(target / f"{i:06d}.png")
    decoded_mb = args.images * args.size * args.size * 3 / 1e6
    print(
        f"{args.images} PNG files written in {time.perf_counter() - start:.0f} s; decoded at "
        f"{args.size}x{args.size}: {decoded_mb:.0f} MB against data.cache_mb={args.cache_mb}",
        flush=True,
    )
    env_cache = work / "cache"
    rows: list[dict[str, Any]] = []
    for mode in args.modes.split(","):
        command = [
            sys.executable, "-m", "cnnkit", "train", "--preset", args.preset,
            "--runs-dir", str(work / "runs"), "data.name=folder", f"data.path={folder}",
            f"data.image_size={args.size}", f"data.cache={mode}", f"data.cache_mb={args.cache_mb}",
            "data.val_split=0", "data.test_split=0.1", "train.epochs=1", f"name={mode}",
            *(["report.enabled=false"] if args.smoke else []),
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(
            command, capture_output=True, text=True, env=_env(env_cache), check=False
        )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
        meta = Run(Path(done.stdout.strip().splitlines()[-1])).meta()
        rows.append({
            "mode": mode, "peak_rss_mb": meta["peak_rss_mb"],
            "train_images_per_second": meta["train_images_per_second"],
            "train_seconds": meta["train_seconds"], "whole_seconds": round(seconds, 1),
            "test_accuracy": meta["test_accuracy"],
        })  # fmt: skip
        print(
            f"{mode:<7} peak RSS {meta['peak_rss_mb']:>7.0f} MB  "
            f"{meta['train_images_per_second']:>6.0f} images/s  whole run {seconds:>5.0f} s",
            flush=True,
        )
    base = rows[0]
    print(f"\nratios against the {base['mode']} run of this invocation:")
    for row in rows:
        print(
            f"{row['mode']:<7} peak RSS x{row['peak_rss_mb'] / base['peak_rss_mb']:.2f}  "
            f"images/s x{row['train_images_per_second'] / base['train_images_per_second']:.2f}  "
            f"whole run x{row['whole_seconds'] / base['whole_seconds']:.2f}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"images": args.images, "size": args.size, "cache_mb": args.cache_mb,
              "decoded_mb": round(decoded_mb, 1), "preset": args.preset, "runs": rows}  # fmt: skip
    (out / "folder_memory.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out / 'folder_memory.json'}")
    return 0


def _env(cache: Path) -> dict[str, str]:
    import os

    # A cache folder of this invocation's own: the first disk run really decodes.
    return {**os.environ, "XDG_CACHE_HOME": str(cache)}


if __name__ == "__main__":
    raise SystemExit(main())
