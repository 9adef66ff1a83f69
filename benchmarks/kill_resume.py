"""Kill a short training run at random instants with SIGKILL, resume it, and check the result.

    python benchmarks/kill_resume.py [--trials 10] [--epochs 8] [--checkpoint-steps 5] [--seed 0]
    python benchmarks/kill_resume.py --smoke [--seed 0]

First one uninterrupted, deterministic reference run. Then, per trial, the same run is started,
killed with SIGKILL at a uniformly random instant of the reference's wall time, and resumed with
``cnnkit train --resume`` (again and again if need be) until it completes. Each trial passes when:
  - the run completes with the same number of epochs and a history of one row per epoch;
  - the resume started from the last checkpoint the killed process committed (its --debug trace
    lists every commit), so no more than the work since that checkpoint was lost;
  - the final weights are bit-identical to the reference's (train.deterministic=true).
Data: the generated 32x32x3 'synthetic' set (no files needed), 640 training images. The runs go
to a temporary folder. Exits non-zero unless every trial passes.

``--smoke``: the same code with 1 trial of a 1-epoch run (no report page), in seconds, to check
that the benchmark still works.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COMMIT = re.compile(r"checkpoint committed at (.+)$", re.MULTILINE)
# --smoke: one trial of a short run (a check that everything runs, not a measurement).
SMOKE = {"trials": 1, "epochs": 1}


def cnnkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "cnnkit", "--debug", *args]


def weights(run: Path) -> list[np.ndarray]:
    from cnnkit.runs import Run

    return Run(run).load_model().get_weights()


def state_position(run: Path) -> str | None:
    from cnnkit.checkpoint import TrainState, saved_position
    from cnnkit.runs import Run

    state = Run(run).state_path
    if not state.is_file():
        return None
    epoch, step = saved_position(state)
    return TrainState(epoch=epoch, step=step).position


def _rank(position: str) -> tuple[int, int]:
    """Order positions: "end of epoch E" is (E, 0); "epoch E, step S" is (E - 1, S)."""
    if match := re.match(r"end of epoch (\d+)", position):
        return int(match[1]), 0
    if match := re.match(r"epoch (\d+), step (\d+)", position):
        return int(match[1]) - 1, int(match[2])
    return -1, 0  # none / the start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--checkpoint-steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill instants")
    parser.add_argument("--smoke", action="store_true", help="tiny runs, seconds: does it run?")
    args = parser.parse_args()
    if args.smoke:  # the smoke sizes become the defaults: what is given still wins
        parser.set_defaults(**SMOKE)
        args = parser.parse_args()
    from cnnkit.runs import RUN_FILE, Run

    rng = np.random.default_rng(args.seed)
    root = Path(tempfile.mkdtemp(prefix="cnnkit-kill-"))
    settings = [
        "--preset", "smoke", "--runs-dir", str(root), "data.name=synthetic",
        f"train.epochs={args.epochs}", "train.batch_size=32",
        f"train.checkpoint_steps={args.checkpoint_steps}", "train.deterministic=true",
        *(["report.enabled=false"] if args.smoke else []),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    start = time.perf_counter()
    done = subprocess.run(
        cnnkit("train", *settings, "name=reference"), capture_output=True, text=True, env=env
    )
    reference_seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stderr)
        return 1
    reference = weights(root / "reference")
    print(f"reference run: {reference_seconds:.1f} s wall time, {args.epochs} epochs, in {root}")
    print(
        f"{'trial':>5} {'kill at':>8} {'in a write':<10}  {'last commit before the kill':<28} "
        f"{'resumed from':<24} {'resumes':>7}  {'complete':<8} {'history':<7} {'weights':<9}"
    )

    passed = 0
    for trial in range(1, args.trials + 1):
        name = f"trial{trial}"
        while True:  # an instant at which the run is still going (else draw again)
            delay = float(rng.uniform(0.05, 0.95) * reference_seconds)
            log = root / f"{name}.log"
            with log.open("w") as out:
                process = subprocess.Popen(
                    cnnkit("train", *settings, f"name={name}"), stdout=out, stderr=out, env=env
                )
                time.sleep(delay)
                finished = process.poll() is not None
                process.send_signal(signal.SIGKILL)
                process.wait()
            meta_file = root / name / RUN_FILE
            if meta_file.is_file() and Run(root / name).meta().get("status") == "complete":
                finished = True  # killed while exiting: it was not interrupted
            if not finished:
                break
            shutil.rmtree(root / name, ignore_errors=True)
        # A temporary checkpoint file left behind means the kill fell inside a checkpoint write.
        in_write = any((root / name).glob("checkpoints/.*.tmp*"))
        commits = COMMIT.findall(log.read_text())
        last_commit = commits[-1] if commits else "none"
        run = root / name
        resumes = 0
        if not (run / RUN_FILE).is_file():
            # Killed before the run folder was made (or in the instant it was still empty):
            # nothing was saved, so the user simply starts again.
            resumed_from = "nothing: started again"
            run = root / f"{name}-again"
            subprocess.run(
                cnnkit("train", *settings, f"name={run.name}"), capture_output=True, env=env
            )
        else:
            resumed_from = state_position(run) or "the start"
        while resumes < 5 and Run(run).meta().get("status") != "complete":
            resumes += 1
            subprocess.run(cnnkit("train", "--resume", str(run)), capture_output=True, env=env)
        meta = Run(run).meta()
        complete = meta.get("status") == "complete" and meta.get("epochs") == args.epochs
        epochs = Run(run).history().get("epoch", [])
        history_ok = [int(e) for e in epochs] == list(range(args.epochs))
        # The resume must start from the newest commit (or a newer one, when the kill fell
        # between the rename and the trace line); never from an older one, never from scratch.
        lost_ok = _rank(resumed_from) >= _rank(last_commit)
        same = complete and all(
            np.array_equal(a, b) for a, b in zip(reference, weights(run), strict=True)
        )
        ok = complete and history_ok and lost_ok and same
        passed += ok
        print(
            f"{trial:>5} {delay:>7.2f}s {'yes' if in_write else 'no':<10}  {last_commit:<28} "
            f"{resumed_from:<24} {resumes:>7}  "
            f"{'yes' if complete else 'NO':<8} {'ok' if history_ok else 'BROKEN':<7} "
            f"{'identical' if same else 'DIFFER':<9}"
        )
    print(
        f"\n{passed}/{args.trials} trials complete with a continuous history, no work lost beyond "
        f"the last checkpoint, and final weights identical to the uninterrupted run"
    )
    return 0 if passed == args.trials else 1


if __name__ == "__main__":
    raise SystemExit(main())
