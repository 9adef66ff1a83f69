"""Every script in benchmarks/ runs in its smoke mode and says something sensible.

``--smoke`` (airspeed velocity's ``asv run --quick``) runs a benchmark's own code, subprocesses
and JSON writing at its smallest sizes, in seconds, on the bundled digits or the generated
images (never the network, never the CIFAR-10 archive). Each test runs it as a person would,
``python benchmarks/X.py --smoke``, from the repository root with its temporary files under
the test's folder, and checks both that it succeeded and that its numbers are numbers: a
benchmark that stops working fails here, not on the day someone needs its table.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import POSTGRES_MISSING, REPO, postgres_bin, postgres_server

BENCHMARKS = REPO / "benchmarks"
# Where the benchmarks, and cnnkit train without --runs-dir, write by default: never in smoke mode.
DEFAULT_OUTPUTS = (BENCHMARKS / "results", REPO / "runs")
TIMEOUT = 300  # seconds; the slowest smoke run takes about half a minute alone
WIDTH = 2  # smoke runs at a time (see AHEAD): three were no faster on two cores


@dataclass
class Smoke:
    """One ``python benchmarks/SCRIPT --smoke ARGS`` run: its folder, and what it did."""

    script: str
    args: tuple[str, ...]
    folder: Path  # its outputs go here (tests point --out/--json into it); TMPDIR under it
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False

    def run(self) -> Smoke:
        scratch = self.folder / "tmp"  # the scripts' temporary folders (tempfile honours TMPDIR)
        scratch.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [sys.executable, str(BENCHMARKS / self.script), "--smoke", *self.args],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TMPDIR": str(scratch)},
        )  # fmt: skip
        try:
            self.stdout, self.stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.timed_out = True
            with contextlib.suppress(psutil.NoSuchProcess):  # workers first: they outlive a parent
                for child in psutil.Process(process.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
            process.kill()
            self.stdout, self.stderr = process.communicate()
        self.returncode = process.returncode
        return self

    def check(self) -> str:
        """Its stdout, once it succeeded; fails with the script's own words when it exited
        non-zero or ran past TIMEOUT (its processes are then killed, those that left its process
        group included)."""
        said = f"{self.stdout[-3000:]}\n{self.stderr[-3000:]}"
        if self.timed_out:
            pytest.fail(f"{self.script} --smoke ran past {TIMEOUT} s:\n{said}")
        assert self.returncode == 0, f"{self.script} --smoke exited {self.returncode}:\n{said}"
        return self.stdout


# Every smoke run, longest first, and its arguments: they start together, two at a time (most
# of each is a Python and TensorFlow start-up, which two cores overlap), and each test waits
# for its own. {folder} is the run's own folder, {run} the shared digits run, {postgres} the
# URL of a PostgreSQL server of the module's own.
AHEAD: dict[str, tuple[str, ...]] = {
    "folder_equivalence.py": ("--mixed", "--out", "{folder}/out"),
    "kill_resume.py": (),
    # Its --postgres path too: without the server this fails (make test installs it) rather than
    # skipping the whole benchmark.
    "tune_throughput.py": ("--postgres", "{postgres}", "--out", "{folder}/out"),
    "data_parallel.py": ("--json", "{folder}/data_parallel.json"),
    "determinism_cost.py": (),
    "time_to_accuracy.py": ("--out", "{folder}/out"),
    "report_time.py": ("{run}", "--out", "{folder}/out"),
    "tuned_vs_tutorial.py": ("--out", "{folder}/out"),
    "torch_reference.py": ("--torch-python", sys.executable, "--json", "{folder}/out.json"),
    "folder_memory.py": ("--out", "{folder}/out"),
    "throughput.py": ("--backends", "tensorflow", "--json", "{folder}/throughput.json"),
    "serve_load.py": ("{run}", "--json", "{folder}/serve_load.json"),
    "calibration.py": ("--runs-dir", "{folder}/runs", "--out", "{folder}/out"),
    "conv_layers.py": ("--json", "{folder}/conv_layers.json"),
}


@dataclass
class Ahead:
    started: dict[str, Future[Smoke]]
    folders: dict[str, Path]
    outputs_before: dict[str, int]
    run_before: dict[str, bytes]

    def result(self, script: str) -> tuple[str, Path]:
        """The script's stdout once it succeeded, and its folder."""
        printed = self.started[script].result().check()
        return printed, self.folders[script]


@pytest.fixture(scope="module")
def ahead(digits_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ahead]:
    folders = {script: tmp_path_factory.mktemp(Path(script).stem) for script in AHEAD}
    # calibration.py analyses runs laid out as RUNS/LABEL/RUN (--train's own would cost four
    # trainings): a copy of the shared digits run, calibrated on its validation split.
    shutil.copytree(digits_run, folders["calibration.py"] / "runs" / "digits" / digits_run.name,
                    ignore=shutil.ignore_patterns("checkpoints"))  # fmt: skip
    outputs, run_files = _outputs(), _snapshot(digits_run)
    if postgres_bin() is None:
        pytest.fail(POSTGRES_MISSING)
    with postgres_server() as postgres, ThreadPoolExecutor(max_workers=WIDTH) as pool:
        started = {}
        for script, args in AHEAD.items():
            filled = tuple(
                a.format(folder=folders[script], run=digits_run, postgres=postgres) for a in args
            )
            started[script] = pool.submit(Smoke(script, filled, folders[script]).run)
        yield Ahead(started, folders, outputs, run_files)
        for future in started.values():
            future.result()  # none is left running past the module


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _outputs() -> dict[str, int]:
    return {
        str(p): p.stat().st_mtime_ns
        for folder in DEFAULT_OUTPUTS
        if folder.is_dir()
        for p in [folder, *folder.rglob("*")]
    }


def read_json(path: Path) -> Any:
    assert path.is_file(), f"{path.name} was not written"
    return json.loads(path.read_text())


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def share(value: Any) -> bool:
    """An accuracy, a calibration error: a number from 0 to 1."""
    return isinstance(value, int | float) and 0.0 <= value <= 1.0


@pytest.mark.slow
def test_no_smoke_run_writes_into_the_repository(ahead: Ahead) -> None:
    for script in AHEAD:
        ahead.result(script)
    assert _outputs() == ahead.outputs_before, f"a --smoke run wrote into {DEFAULT_OUTPUTS}"


def test_every_benchmark_has_a_smoke_test() -> None:
    scripts = sorted(p.stem for p in BENCHMARKS.glob("*.py"))
    assert scripts, f"no benchmark found in {BENCHMARKS}"
    for name in scripts:
        assert "--smoke" in (BENCHMARKS / f"{name}.py").read_text(), f"{name}.py has no --smoke"
        assert f"test_{name}_smoke" in globals(), f"benchmarks/{name}.py has no test here"


@pytest.mark.slow
def test_calibration_smoke(ahead: Ahead) -> None:
    printed, folder = ahead.result("calibration.py")
    out = folder / "out"
    assert "digits: 1 run(s)" in printed
    [record] = read_json(out / "calibration.json")["runs"]["digits"]
    assert share(record["test_accuracy"]) and positive(record["temperature"])
    assert record["source"] and record["held_out"] > 100
    for side in ("before", "after", "temperature_only", "vector_only", "test_fitted_temperature"):
        numbers = record[side]
        assert share(numbers["accuracy"]) and share(numbers["ece"]), (side, numbers)
        assert positive(numbers["nll"]) and 0 <= numbers["brier"] <= 2, (side, numbers)
    assert list(record["sizes"]) == ["100"]
    assert share(record["sizes"]["100"]["ece_median"])
    assert positive(record["sizes"]["100"]["temperature_min"])


@pytest.mark.slow
def test_conv_layers_smoke(ahead: Ahead) -> None:
    out = ahead.result("conv_layers.py")[1] / "conv_layers.json"
    record = read_json(out)
    assert record["batch"] == 4 and positive(record["matmul_tflops"])
    assert len(record["layers"]) == 6
    for layer in record["layers"]:
        for name in ("forward", "backward_input", "backward_weights"):
            assert positive(layer[f"{name}_tflops"]), layer
    assert all(positive(v) for v in record["total_ms"].values())


@pytest.mark.slow
def test_data_parallel_smoke(ahead: Ahead) -> None:
    out = ahead.result("data_parallel.py")[1] / "data_parallel.json"
    record = read_json(out)
    assert record["data"] == "synthetic" and record["rounds"] == 1
    assert [r["configuration"] for r in record["rows"]] == [
        "jax 1 process, 1 device", "tensorflow 1 process",
    ]  # fmt: skip
    for row in record["rows"]:
        assert positive(row["train_images_per_second"]) and share(row["test_accuracy_round_1"])
    assert record["largest_weight_difference"] == {}  # one JAX run: no pair to compare


@pytest.mark.slow
def test_determinism_cost_smoke(ahead: Ahead) -> None:
    printed = ahead.result("determinism_cost.py")[0]
    for setting in ("false", "true"):
        row = re.search(rf"^deterministic={setting} +([\d,]+) ", printed, re.MULTILINE)
        assert row and positive(float(row[1].replace(",", ""))), printed
    ratio = re.search(r"deterministic / default speed: ([\d.]+)x", printed)
    assert ratio and positive(float(ratio[1])), printed


@pytest.mark.slow
def test_folder_equivalence_smoke(ahead: Ahead) -> None:
    out = ahead.result("folder_equivalence.py")[1] / "out"
    record = read_json(out / "folder_equivalence.json")
    [row] = record["runs"]
    assert row["identical_pixels"] is True  # the exported PNG folder holds the very pixels
    for side in ("archive", "folder"):
        assert share(row[side]["accuracy"]) and positive(row[side]["images_per_second"])
    summary = record["summary"]
    assert summary["seeds"] == 1 and math.isfinite(summary["mean_difference"])
    mixed = summary["mixed"]
    assert mixed["images"] == 300 and mixed["broken_files_written"] > 0
    # Every broken file was reported and skipped; predict answered for each of the 100 test
    # pictures and refused every other file.
    assert mixed["skipped_in_run"] == mixed["broken_files_written"]
    assert mixed["predict_answered"] == 100 and mixed["predict_errors"] > 0
    assert mixed["predict_answered"] + mixed["predict_errors"] == mixed["predict_files"]
    assert share(mixed["predict_accuracy"]) and share(mixed["accuracy"])


@pytest.mark.slow
def test_folder_memory_smoke(ahead: Ahead) -> None:
    out = ahead.result("folder_memory.py")[1] / "out"
    record = read_json(out / "folder_memory.json")
    assert record["images"] == 200 and record["decoded_mb"] > 0
    [row] = record["runs"]
    assert row["mode"] == "disk" and positive(row["peak_rss_mb"]), row
    assert positive(row["train_images_per_second"]) and positive(row["whole_seconds"]), row
    assert share(row["test_accuracy"]), row


@pytest.mark.slow
def test_kill_resume_smoke(ahead: Ahead) -> None:
    printed = ahead.result("kill_resume.py")[0]
    # (the script exits non-zero unless the trial passed; this is what it says it checked)
    assert re.search(r"^reference run: [\d.]+ s wall time", printed, re.MULTILINE), printed
    assert "1/1 trials complete with a continuous history" in printed


@pytest.mark.slow
def test_report_time_smoke(ahead: Ahead, digits_run: Path) -> None:
    out = ahead.result("report_time.py")[1] / "out"
    assert _snapshot(digits_run) == ahead.run_before  # it works on a copy
    record = read_json(out / "report_time.json")
    assert record["test_images"] > 0
    for verb in ("report", "evaluate"):
        assert len(record["seconds"][verb]) == 1 and positive(record["median"][verb])
    assert positive(record["report_drawing_seconds"][0])


@pytest.mark.slow
def test_serve_load_smoke(ahead: Ahead) -> None:
    out = ahead.result("serve_load.py")[1] / "serve_load.json"
    record = read_json(out)
    assert record["clients"] == 2 and record["engine"] == "keras"
    assert record["requests"] > 0 and record["errors"] == 0, record
    assert positive(record["requests_per_second"]) and positive(record["latency_ms"]["p50"])
    assert record["latency_ms"]["p50"] <= record["latency_ms"]["max"]
    memory = record["server_rss_mb"]
    assert positive(memory["before"]) and positive(memory["after"])
    # Every answered request was one image through the model (warm-up requests included).
    assert 1 <= record["model_calls"] <= record["images"]
    assert record["images"] >= record["requests"]


@pytest.mark.slow
def test_throughput_smoke(ahead: Ahead) -> None:
    # --backends runs the default measurement (make bench's, fp32) in a process of its own and
    # reads its JSON back: both paths for one TensorFlow start-up.
    out = ahead.result("throughput.py")[1] / "throughput.json"
    record = read_json(out)
    assert record["steps"] == 3 and record["rounds"] == 1 and record["precision"] == "fp32"
    assert [(r["backend"], r["model"]) for r in record["rows"]] == [
        ("tensorflow", "seed_cnn"), ("tensorflow", "fast_cnn"),
    ]  # fmt: skip
    for row in record["rows"]:
        assert positive(row["train_images_per_second"]), row
        assert len(row["runs"]) == 1 and positive(row["runs"][0]), row


@pytest.mark.slow
def test_time_to_accuracy_smoke(ahead: Ahead) -> None:
    out = ahead.result("time_to_accuracy.py")[1] / "out"
    record = read_json(out / "time_to_accuracy.json")
    assert record["failed"] == [] and record["target"] == 0.7534
    [run] = record["runs"]
    assert run["label"] == "smoke-budget" and run["epochs"] >= 1
    assert run["curve"] and all(positive(t) and share(a) for t, a in run["curve"]), run
    assert share(run["final_accuracy"]) and positive(run["total_seconds"]), run
    # What the budget chose, as the budget table and chart read it.
    budget = run["budget"]
    assert budget["seconds"] == 15 and budget["epochs"] == run["epochs"]
    assert positive(budget["images_per_second"]) and positive(budget["calibration_seconds"])
    assert (out / "time_to_accuracy.png").stat().st_size > 0
    assert (out / "budget_family.png").stat().st_size > 0


@pytest.mark.slow
def test_torch_reference_smoke(ahead: Ahead) -> None:
    # The venv's own interpreter has torch (the dev extra); the README passes another one.
    out = ahead.result("torch_reference.py")[1] / "out.json"
    record = read_json(out)
    assert record["model"] == "fast_cnn" and record["batch"] == 8
    for framework in ("keras", "torch"):
        assert [positive(v) for v in record["images_per_second"][framework]] == [True]
    assert positive(record["ratio_of_medians"])


@pytest.mark.slow
def test_tune_throughput_smoke(ahead: Ahead) -> None:
    out = ahead.result("tune_throughput.py")[1] / "out"
    record = read_json(out / "tune_throughput.json")
    assert [s["workers"] for s in record["studies"]] == [1, 2]
    for study in record["studies"]:
        assert study["trials"] >= 1 and positive(study["trials_per_hour"]), study
        assert positive(study["median_trial_seconds"]), study
    assert [s["storage"] for s in record["storage"]] == ["memory", "sqlite", "postgresql"]
    for storage in record["storage"]:
        assert storage["trials"] == 3 and positive(storage["median_ms_per_trial"]), storage
    assert positive(record["summary"]["2_worker"]["median_trials_per_hour"])


@pytest.mark.slow
def test_tuned_vs_tutorial_smoke(ahead: Ahead) -> None:
    out = ahead.result("tuned_vs_tutorial.py")[1] / "out"
    assert (out / "best.yaml").is_file()  # its stand-in for a study's best trial
    record = read_json(out / "tuned_vs_tutorial.json")
    assert record["best"] == str(out / "best.yaml")
    assert [r["side"] for r in record["runs"]] == ["tutorial", "tuned"]
    for run in record["runs"]:
        assert share(run["test_accuracy"]) and share(run["val_accuracy"]), run
        assert positive(run["train_seconds"]), run
    summary = record["summary"]
    assert share(summary["tutorial"]["mean"]) and share(summary["tuned"]["mean"])
    assert math.isfinite(summary["gap_points"])
