"""cnnkit.env: the CPU's knobs cnnkit sets before TensorFlow starts (issue 16): oneDNN on every
x86 CPU unless the user chose, reported as it really is, and with results equal to Eigen's up to
float rounding."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's switch is x86-only"
    ),
]

# A tiny run through the API, in a fresh process (TensorFlow reads the switch once, at import).
SCRIPT = """
import json, sys
import cnnkit
from cnnkit.env import describe
config = cnnkit.load_config("smoke", overrides=[
    "data.name=digits", "train.epochs=2", "train.deterministic=true", "report.enabled=false",
    "model.params.filters=[8,16]", "model.params.dense=32", "train.precision=fp32"])
run = cnnkit.train(config, runs_dir=sys.argv[1], verbose=0)
print(json.dumps({"onednn": describe()["onednn"], "history": run.history(),
                  "metrics": run.metrics()["test"]}))
"""


def _train(tmp_path: Path, setting: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = setting
    env["PYTHONPATH"] = str(REPO / "src")
    runs = tmp_path / f"runs-{setting}"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(runs)], capture_output=True,
                          text=True, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_onednn_is_on_unless_the_user_says_and_changes_only_rounding(tmp_path: Path) -> None:
    # The two processes at once: most of each is a start-up, which two cores overlap.
    with ThreadPoolExecutor(max_workers=2) as pool:
        default = pool.submit(_train, tmp_path, None)  # cnnkit's default
        user = pool.submit(_train, tmp_path, "0")  # the user's own setting is kept
        with_onednn, eigen = default.result(), user.result()
    assert with_onednn["onednn"] is True and eigen["onednn"] is False
    for key in ("loss", "accuracy", "val_loss"):
        ours, theirs = with_onednn["history"][key], eigen["history"][key]
        assert len(ours) == len(theirs) == 2
        for a, b in zip(ours, theirs, strict=True):
            assert abs(a - b) <= 1e-3 * max(1.0, abs(b)), (key, ours, theirs)
    a, b = with_onednn["metrics"], eigen["metrics"]
    assert abs(a["loss"] - b["loss"]) <= 1e-3 * max(1.0, b["loss"]), (a["loss"], b["loss"])
    assert abs(a["accuracy"] - b["accuracy"]) <= 2 / 360  # an image or two either way at most
