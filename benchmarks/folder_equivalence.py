"""Is an image folder the same dataset as the archive it came from? Trains both, side by side.

    python benchmarks/folder_equivalence.py [--train 2000] [--test 1000] [--seeds 3] [--preset fast]
                                            [--set train.batch_size=128 ...] [--mixed] [--out DIR]
    python benchmarks/folder_equivalence.py --smoke [--mixed] [--out DIR]

For each seed: the stratified sample of ``--train`` training and ``--test`` test images that
``cnnkit train data.train_subset=... data.test_subset=... seed=S`` draws from the real CIFAR-10
archive is exported as PNG files into DIR/train/<class>/ and DIR/test/<class>/; the decoded
folder is checked to hold exactly the archive's pixels; then the same preset trains on the
archive sample and on the folder (``data.name=folder``), and both test accuracies are recorded.

``--mixed``: one more run on the same images exported as a user's folder would be: PNG, JPEG
(quality 95), BMP, lossless WebP and a few GIFs, some enlarged to 48x48, plus broken files (truncated
JPEGs, text named .png, empty files, a stray README, a hidden file). It checks that the broken
files are reported and skipped, and that ``cnnkit predict`` on the test folder's files gives the
class of the folder each file is in as often as the run's own evaluation says it should.

Writes JSON under ``--out`` (default: benchmarks/results); folders and runs go to a temporary
folder. Needs the real CIFAR-10 (``CNNKIT_DATA_DIR`` or the cache).

``--smoke``: the same code with the generated ``synthetic`` images in place of CIFAR-10 (no
download, no archive), 200 training and 100 test images, one seed, the smoke preset for 1 epoch
without report pages, in seconds, to check that the benchmark still works; the JSON goes to a
temporary folder unless ``--out`` says where.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# --smoke: tiny runs on the generated images (a check that everything runs, not a measurement).
SMOKE = {"train": 200, "test": 100, "seeds": 1, "preset": "smoke", "out": None,
         "set": ["data.name=synthetic", "train.epochs=1", "report.enabled=false"]}  # fmt: skip


def export(data: Any, root: Path, mixed: bool = False) -> dict[str, int]:
    """Write ``data``'s train and test images under ``root``; returns what was written."""
    written = {"images": 0, "broken": 0}
    formats = ["png", "jpg", "bmp", "webp"]
    for part, split in (("train", data.train), ("test", data.test)):
        for i, (x, y) in enumerate(zip(split.x, split.y, strict=True)):
            folder = root / part / data.class_names[y]
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(x)
            if not mixed:
                image.save(folder / f"{i:05d}.png")
            else:
                kind = "gif" if i % 50 == 7 else formats[i % len(formats)]
                if i % 10 == 3:
                    image = image.resize((48, 48), Image.Resampling.BICUBIC)
                options = {"quality": 95} if kind == "jpg" else {}
                options = {"lossless": True} if kind == "webp" else options
                image.save(folder / f"{i:05d}.{kind}", **options)
            written["images"] += 1
        if mixed:
            some = sorted((root / part).iterdir())
            for j, folder in enumerate(some):
                jpeg = next(folder.glob("*.jpg")).read_bytes()
                (folder / f"truncated_{j}.jpg").write_bytes(jpeg[: len(jpeg) // 3])
                (folder / f"text_{j}.png").write_text("this is not a picture")
                (folder / f"empty_{j}.webp").write_bytes(b"")
                (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
                written["broken"] += 3
            (root / part / "README.txt").write_text("exported from CIFAR-10 by cnnkit")
            written["broken"] += 1
    return written


def same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two image sets hold the same images, in any order."""
    if a.shape != b.shape:
        return False
    rows = lambda x: sorted(bytes(r) for r in x.reshape(len(x), -1))  # noqa: E731
    return rows(a) == rows(b)


def train(args: list[str], runs: Path) -> dict[str, Any]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cnnkit", "train", "--runs-dir", str(runs), *args],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"cnnkit train {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    run = Path(done.stdout.strip().splitlines()[-1])
    from cnnkit.runs import Run

    meta = Run(run).meta()
    return {
        "run": str(run),
        "accuracy": meta["test_accuracy"],
        "train_seconds": meta["train_seconds"],
        "images_per_second": meta["train_images_per_second"],
        "seconds": round(time.perf_counter() - start, 1),
        "skipped_files": meta["dataset"].get("skipped_files", 0),
        "stdout": done.stdout,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--preset", default="fast")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a config override for every run (e.g. train.batch_size=128: the fast recipe's "
        "1024 leaves only two steps per epoch on 2,000 images)",
    )  # fmt: skip
    parser.add_argument("--mixed", action="store_true", help="also the mixed-format folder run")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smoke", action="store_true", help="tiny runs, seconds: does it run?")
    args = parser.parse_args()
    if args.smoke:  # the smoke sizes become the defaults: what is given still wins
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
        args.out = args.out or tempfile.mkdtemp(prefix="cnnkit-smoke-")

    from cnnkit.config import DataConfig
    from cnnkit.data import load_dataset

    work = Path(tempfile.mkdtemp(prefix="cnnkit-folder-eq-"))
    runs = work / "runs"
    common = ["--preset", args.preset, "data.val_split=0", *args.set]
    results: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        sample = DataConfig(
            name=_source(args), train_subset=args.train, test_subset=args.test, val_split=0
        )
        data = load_dataset(sample, seed)
        folder = work / f"cifar-png-{seed}"
        export(data, folder)
        decoded = load_dataset(
            DataConfig(name="folder", path=str(folder), val_split=0, image_size=32), seed
        )
        identical = same_pixels(decoded.train.x, data.train.x) and same_pixels(
            decoded.test.x, data.test.x
        )
        archive = train(
            [*common, f"seed={seed}", f"data.train_subset={args.train}",
             f"data.test_subset={args.test}"], runs,
        )  # fmt: skip
        from_folder = train(
            [*common, f"seed={seed}", "data.name=folder", f"data.path={folder}"], runs
        )
        row = {"seed": seed, "identical_pixels": identical,
               "archive": archive, "folder": from_folder}  # fmt: skip
        results.append(row)
        print(
            f"seed {seed}: archive {archive['accuracy']:.4f}  folder {from_folder['accuracy']:.4f}  "
            f"(same pixels: {identical}; train {archive['train_seconds']:.0f} s vs "
            f"{from_folder['train_seconds']:.0f} s)",
            flush=True,
        )
    a = [r["archive"]["accuracy"] for r in results]
    f = [r["folder"]["accuracy"] for r in results]
    spread = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
    summary: dict[str, Any] = {
        "preset": args.preset, "overrides": args.set, "train_images": args.train, "test_images": args.test,
        "seeds": args.seeds,
        "archive_mean": statistics.mean(a), "archive_sd": spread(a),
        "folder_mean": statistics.mean(f), "folder_sd": spread(f),
        "mean_difference": statistics.mean(f) - statistics.mean(a),
    }  # fmt: skip
    print(
        f"{args.preset}, {args.train} train / {args.test} test images, {args.seeds} seeds: "
        f"archive {summary['archive_mean']:.4f} ± {summary['archive_sd']:.4f}, "
        f"folder {summary['folder_mean']:.4f} ± {summary['folder_sd']:.4f}, "
        f"difference {summary['mean_difference']:+.4f}"
    )
    if args.mixed:
        summary["mixed"] = mixed_run(args, work, runs, common)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for r in results:
        for side in ("archive", "folder"):
            r[side].pop("stdout", None)
    target = out / "folder_equivalence.json"
    target.write_text(json.dumps({"summary": summary, "runs": results}, indent=2) + "\n")
    print(f"wrote {target}")
    return 0


def mixed_run(args: Any, work: Path, runs: Path, common: list[str]) -> dict[str, Any]:
    from cnnkit.config import DataConfig
    from cnnkit.data import load_dataset

    sample = DataConfig(
        name=_source(args), train_subset=args.train, test_subset=args.test, val_split=0
    )
    data = load_dataset(sample, 0)
    folder = work / "cifar-mixed"
    written = export(data, folder, mixed=True)
    result = train(
        [*common, "seed=0", "data.name=folder", f"data.path={folder}", "data.image_size=32"], runs
    )
    files = sorted(p for p in (folder / "test").rglob("*") if p.is_file())
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cnnkit", "predict", result["run"], *map(str, files), "--json",
         "--top-k", "1"],
        capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    answers = json.loads(done.stdout)
    right = sum(Path(a["image"]).parent.name == a["top"][0]["class"] for a in answers)
    errors = [line for line in done.stderr.splitlines() if line.startswith("cnnkit: error:")]
    row = {
        "images": written["images"], "broken_files_written": written["broken"],
        "skipped_in_run": result["skipped_files"], "accuracy": result["accuracy"],
        "train_seconds": result["train_seconds"], "predict_files": len(files),
        "predict_answered": len(answers), "predict_errors": len(errors),
        "predict_accuracy": right / max(1, len(answers)), "predict_seconds": round(seconds, 1),
        "predict_exit_status": done.returncode,
    }  # fmt: skip
    print(
        f"mixed formats: {written['images']} images + {written['broken']} broken files; run skipped "
        f"{result['skipped_files']}, test accuracy {result['accuracy']:.4f}; cnnkit predict on "
        f"{len(files)} test files: {len(answers)} answered, {len(errors)} errors, "
        f"{row['predict_accuracy']:.4f} right by folder name ({seconds:.0f} s)"
    )
    return row


def _source(args: Any) -> str:
    """The archive the folders are exported from: CIFAR-10, or the generated images (smoke)."""
    return "synthetic" if args.smoke else "cifar10"


if __name__ == "__main__":
    raise SystemExit(main())
