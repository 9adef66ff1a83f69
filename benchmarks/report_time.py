"""How long `cnnkit report RUN` takes, against `cnnkit evaluate RUN` timed in the same run.

    python benchmarks/report_time.py RUN [--repeats 3] [--out DIR]
    python benchmarks/report_time.py RUN --smoke [--out DIR]

Both commands start a fresh process, import Keras, read the run's data and load its model;
evaluate then predicts the whole test set (with the run's test-time augmentation), while report
reads the saved predictions and draws every picture, the heatmaps included. They are run
alternately (report, evaluate, report, ...) on a copy of RUN, so that machine noise hits both
alike; the medians and their ratio are printed, and every repeat is kept in the JSON. The report
also times itself (report.json "seconds": drawing and writing only, without start-up and data).
RUN itself is left as it was; ``--out DIR`` writes report_time.json there.

``--smoke``: the same code with 1 repeat, in seconds, to check that the benchmark still works on
any run (e.g. one of ``cnnkit train --preset smoke data.name=digits train.epochs=1``); the JSON
goes to a temporary folder unless ``--out`` says where.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# --smoke: one repeat (a check that everything runs, not a measurement).
SMOKE = {"repeats": 1}


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write report_time.json here")
    parser.add_argument("--smoke", action="store_true", help="1 repeat, seconds: does it run?")
    args = parser.parse_args()
    if args.smoke:  # the smoke sizes become the defaults: what is given still wins
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
        args.out = args.out or Path(tempfile.mkdtemp(prefix="cnnkit-smoke-"))
    work = Path(tempfile.mkdtemp(prefix="cnnkit-report-time-")) / args.run.name
    shutil.copytree(args.run, work, ignore=shutil.ignore_patterns("checkpoints"))
    from cnnkit.runs import Run

    images = Run(work).metrics()["test"]["num_images"]
    cnnkit = [sys.executable, "-m", "cnnkit"]
    times: dict[str, list[float]] = {"report": [], "evaluate": []}
    drawing: list[float] = []
    for _ in range(args.repeats):
        times["report"].append(timed([*cnnkit, "report", str(work)]))
        drawing.append(Run(work).report_numbers()["seconds"])
        times["evaluate"].append(timed([*cnnkit, "evaluate", str(work)]))
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"run {args.run} ({images} test images), {args.repeats} alternating repeats each")
    for name, values in times.items():
        print(
            f"  cnnkit {name:<8} median {median[name]:6.1f} s  ({', '.join(f'{v:.1f}' for v in values)})"
        )
    print(f"  drawing and writing the report alone: median {statistics.median(drawing):.1f} s")
    print(f"  report / evaluate: {median['report'] / median['evaluate']:.2f}x")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {"run": str(args.run), "test_images": images, "seconds": times,
                  "report_drawing_seconds": drawing, "median": median}  # fmt: skip
        (args.out / "report_time.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out / 'report_time.json'}")
    shutil.rmtree(work.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
