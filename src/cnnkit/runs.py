"""Run folders: the one module that knows their layout. Every file's name, its reader and its
writer are here, and every write is atomic (:mod:`cnnkit.atomic`)::

    runs/<name>/
      run.json                 status, classes, input shape, dataset, precision, timings
      config.yaml              the resolved config (written first: it makes the folder resumable)
      env.json                 versions, backend, CPU and accelerators
      model.keras              the model predict/evaluate use (best or last, per train.keep;
                               its last layer the temperature, per train.calibrate)
      checkpoints/state.npz    the training state (its format: cnnkit.checkpoint)
      checkpoints/best.keras   best by train.monitor;  checkpoints/last.keras  the last epoch
      history.csv              one row per epoch
      metrics.json             test metrics: loss, accuracy, per-class P/R/F1, confusion matrix,
                               calibration (ECE, Brier), before and after calibration
      predictions.npz          the test set's predicted probabilities and labels (and before
                               calibration, and the held-out images calibrated on)
      classification_report.txt, model_summary.txt, skipped_files.csv
      files.csv                which file is which image of each split (split, index, file,
                               label), for sources read from files: folders, tables, hf
      table.csv                the label table of a run trained on a DataFrame
      report.html              the report page, self-contained; report.json its numbers
      figures/*.png            every picture of the report
      tensorboard/             with train.tensorboard=true
      export/                  cnnkit export: model.onnx, saved_model/, model.tflite, <format>.json

Runs are created fresh (an existing folder is never reused) and opened by every verb that uses
one (:func:`open_run`).

Over 500 lines: it is the one owner of the run folder's layout, each file's reader beside its
writer; split, the layout would have two owners.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cnnkit.atomic import atomic_path, atomic_write, read_json, write_json, write_text
from cnnkit.config import RUN_NAME, Config
from cnnkit.errors import RunError

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
MODEL_FILE = "model.keras"
CHECKPOINTS = "checkpoints"
STATE_FILE = "state.npz"
BEST_FILE = "best.keras"
LAST_FILE = "last.keras"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.npz"
CLASSIFICATION_REPORT_FILE = "classification_report.txt"
SUMMARY_FILE = "model_summary.txt"
SKIPPED_FILE = "skipped_files.csv"
FILES_FILE = "files.csv"
TABLE_FILE = "table.csv"
REPORT_FILE = "report.html"
REPORT_JSON = "report.json"
FIGURES = "figures"
TENSORBOARD = "tensorboard"
EXPORT = "export"
# The formats cnnkit export writes, each one's file in RUN/export/: the one table of them (the
# exporter writes and loads each; the commands take their choices from here).
EXPORT_FORMATS = {"onnx": "model.onnx", "saved_model": "saved_model", "tflite": "model.tflite"}
# What predict and serve can run: the run's model.keras, or one of its exports.
ENGINES = ("keras", *EXPORT_FORMATS)
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class Run:
    """A run folder on disk: where each file is, and how it is read and written."""

    path: Path

    # -- where things are -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def state_path(self) -> Path:
        return self.checkpoints / STATE_FILE

    @property
    def best_path(self) -> Path:
        return self.checkpoints / BEST_FILE

    @property
    def last_path(self) -> Path:
        return self.checkpoints / LAST_FILE

    @property
    def figures(self) -> Path:
        return self.path / FIGURES

    @property
    def report_path(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    def export_path(self, fmt: str) -> Path:
        """Where ``cnnkit export --format fmt`` writes by default."""
        return self.path / EXPORT / EXPORT_FORMATS[fmt]

    # -- run.json ---------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        loaded = self._json(RUN_FILE, "the run is damaged")
        if not isinstance(loaded, dict):
            raise RunError(f"{self.file(RUN_FILE)} is not a run record")
        return loaded

    def update_meta(self, **values: Any) -> dict[str, Any]:
        meta = self.meta() if self.file(RUN_FILE).exists() else {}
        meta.update(values)
        write_json(self.file(RUN_FILE), meta)
        return meta

    @property
    def class_names(self) -> list[str]:
        return list(self.meta()["classes"])

    @property
    def complete(self) -> bool:
        return self.meta().get("status") == "complete"

    # -- config.yaml, env.json --------------------------------------------------------------------

    def config(self) -> Config:
        from cnnkit.config import read_yaml
        from cnnkit.errors import ConfigError

        try:
            return Config.from_dict(read_yaml(self.file(CONFIG_FILE), "the run's config"))
        except ConfigError as exc:
            raise RunError(f"{self.file(CONFIG_FILE)} is unreadable ({exc})") from None

    def write_config(self, config: Config) -> None:
        write_text(self.file(CONFIG_FILE), config.to_yaml())

    def env(self) -> dict[str, Any]:
        """env.json's record ({} where it is missing or unreadable: it is only informative)."""
        try:
            value = read_json(self.file(ENV_FILE))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def write_env(self, info: dict[str, Any]) -> None:
        write_json(self.file(ENV_FILE), info)

    # -- history.csv ------------------------------------------------------------------------------

    def history(self) -> dict[str, list[float]]:
        """history.csv as columns of floats (``epoch`` included); {} where there is none yet."""
        if not self.file(HISTORY_FILE).is_file():
            return {}
        return read_history(self.file(HISTORY_FILE))

    def write_history(self, history: dict[str, list[float]]) -> None:
        keys = sorted(history)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["epoch", *keys])
        for i in range(len(next(iter(history.values()), []))):
            writer.writerow([i, *(history[k][i] for k in keys)])
        write_text(self.file(HISTORY_FILE), out.getvalue())

    # -- test results -----------------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        """metrics.json: ``{"test": scores, "kept": "best" | "last"}``, and for a calibrated
        run ``"uncalibrated"`` (the same scores of the network's own probabilities) and
        ``"calibration"`` (the temperature and what it was fitted on)."""
        if not self.file(METRICS_FILE).is_file():
            raise RunError(f"run {self.path} has no {METRICS_FILE}; it did not finish evaluating")
        value = self._json(METRICS_FILE, "the run is damaged")
        if not isinstance(value, dict) or not isinstance(value.get("test"), dict):
            raise RunError(f"{self.file(METRICS_FILE)} is unreadable; the run is damaged")
        return value

    def write_metrics(
        self,
        scores: dict[str, Any],
        kept: str,
        uncalibrated: dict[str, Any] | None = None,
        calibration: dict[str, Any] | None = None,
    ) -> None:
        values: dict[str, Any] = {"test": scores, "kept": kept}
        if uncalibrated is not None:
            values.update(uncalibrated=uncalibrated, calibration=calibration)
        write_json(self.file(METRICS_FILE), values)

    def predictions(self) -> tuple[Any, Any] | None:
        """The saved test probabilities (float64) and labels (int64), or None."""
        arrays = self.prediction_arrays()
        if "probabilities" not in arrays or "labels" not in arrays:
            return None
        return arrays["probabilities"], arrays["labels"]

    def prediction_arrays(self) -> dict[str, Any]:
        """Every array of predictions.npz (probabilities as float64, labels as int64): the test
        set's ``probabilities`` and ``labels``; for a calibrated run also ``uncalibrated`` (the
        network's own test probabilities) and ``held_out_probabilities``/``held_out_labels``
        (the images the temperature was fitted on, uncalibrated). Empty when there is none."""
        import numpy as np

        path = self.file(PREDICTIONS_FILE)
        if not path.is_file():
            return {}
        with np.load(path, allow_pickle=False) as saved:
            return {
                name: saved[name].astype(np.int64 if "labels" in name else np.float64)
                for name in saved.files
            }

    def write_predictions(
        self,
        probabilities: Any,
        labels: Any,
        uncalibrated: Any = None,
        held_out: tuple[Any, Any] | None = None,
    ) -> None:
        import numpy as np

        arrays = {"probabilities": np.asarray(probabilities, np.float32),
                  "labels": np.asarray(labels, np.int32)}  # fmt: skip
        if uncalibrated is not None:
            arrays["uncalibrated"] = np.asarray(uncalibrated, np.float32)
        if held_out is not None:
            arrays["held_out_probabilities"] = np.asarray(held_out[0], np.float32)
            arrays["held_out_labels"] = np.asarray(held_out[1], np.int32)
        with atomic_write(self.file(PREDICTIONS_FILE)) as f:
            np.savez(f, **arrays)

    def write_classification_report(self, text: str) -> None:
        write_text(self.file(CLASSIFICATION_REPORT_FILE), text)

    def write_summary(self, lines: list[str]) -> None:
        write_text(self.file(SUMMARY_FILE), "\n".join(lines) + "\n")

    def write_skipped(self, skipped: tuple[tuple[str, str], ...]) -> Path:
        """skipped_files.csv: each file the dataset left out, with the reason."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["file", "reason"])
        writer.writerows(skipped)
        write_text(self.file(SKIPPED_FILE), out.getvalue())
        return self.file(SKIPPED_FILE)

    def write_files(self, splits: dict[str, Any], class_names: list[str]) -> Path | None:
        """files.csv: each split's images by position (``splits``: name -> a Split with
        ``files``); None, and nothing written, where the splits have no file names."""
        if all(getattr(split, "files", None) is None for split in splits.values()):
            return None
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["split", "index", "file", "label"])
        for name, split in splits.items():
            if split is None or split.files is None:
                continue
            for i, (file, label) in enumerate(zip(split.files, split.y, strict=True)):
                writer.writerow([name, i, file, class_names[int(label)]])
        write_text(self.file(FILES_FILE), out.getvalue())
        return self.file(FILES_FILE)

    def files(self, split: str) -> list[str] | None:
        """The file names of ``split``'s images, in order (files.csv), or None."""
        path = self.file(FILES_FILE)
        if not path.is_file():
            return None
        with path.open(newline="", encoding="utf-8") as f:
            rows = [row for row in csv.DictReader(f) if row.get("split") == split]
        return [row["file"] for row in sorted(rows, key=lambda row: int(row["index"]))] or None

    def write_table(self, text: str) -> Path:
        """table.csv: the label table of a run trained on a DataFrame (resume, evaluate and
        report read it; :func:`cnnkit.data.table.as_csv` writes its text)."""
        write_text(self.file(TABLE_FILE), text)
        return self.file(TABLE_FILE)

    def report_numbers(self) -> dict[str, Any]:
        """report.json ({} where there is none or it is unreadable)."""
        try:
            value = read_json(self.file(REPORT_JSON))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def write_report(self, numbers: dict[str, Any], page: str) -> Path:
        write_json(self.file(REPORT_JSON), numbers)
        write_text(self.report_path, page)
        return self.report_path

    # -- networks ---------------------------------------------------------------------------------

    def keep_model(self, keep: str) -> str:
        """Make the best (or last) checkpoint the run's model.keras; return which was kept
        ("last" when "best" was asked and there is none: no validation split)."""
        if keep == "best" and not self.best_path.is_file():
            keep = "last"
        source = self.best_path if keep == "best" else self.last_path
        with atomic_path(self.model_path) as tmp:
            shutil.copyfile(source, tmp)
        return keep

    def load_model(self, path: Path | None = None) -> Any:
        """The run's model.keras (or ``path``, a network of this run), checked against run.json:
        a network whose input or output does not match the run's images and classes is a
        RunError, never a wrong answer."""
        model = load_model(path or self.model_path)
        self.check_model(model.input_shape, model.output_shape, path or self.model_path)
        return model

    def check_model(self, input_shape: Any, output_shape: Any, source: Path) -> None:
        """Refuse a network that does not take this run's images or answer with its classes."""
        meta = self.meta()
        classes, expected = meta.get("classes") or [], meta.get("input_shape")
        outputs = _last_dimension(output_shape)
        if outputs != len(classes):
            raise RunError(
                f"{source} answers with {outputs} outputs, but run {self.path} has "
                f"{len(classes)} classes; it is not this run's model (train the run again, or "
                f"put its own model back)"
            )
        taken = _image_shape(input_shape)
        if expected and taken is not None and taken != tuple(int(v) for v in expected):
            raise RunError(
                f"{source} takes images of shape {taken}, but run {self.path} was trained on "
                f"{tuple(expected)}; it is not this run's model"
            )

    def _json(self, name: str, damaged: str) -> Any:
        try:
            return read_json(self.file(name))
        except (OSError, ValueError) as exc:
            raise RunError(f"{self.file(name)} is unreadable ({exc}); {damaged}") from None


def _last_dimension(shape: Any) -> int | None:
    """The class count of a model's output shape (a single output only)."""
    if isinstance(shape, list):  # several outputs: not a classifier of this kind
        return None
    try:
        return int(shape[-1])
    except (TypeError, IndexError, ValueError):
        return None


def _image_shape(shape: Any) -> tuple[int, ...] | None:
    """(height, width, channels) a model takes, where they are fixed (None where any size goes)."""
    if shape is None or isinstance(shape, list):
        return None
    dims = tuple(shape[1:])
    return None if any(d is None for d in dims) else tuple(int(d) for d in dims)


def read_history(path: Path) -> dict[str, list[float]]:
    """A history.csv (one row per epoch) as columns of floats; cells that are not numbers: NaN."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(float("nan"))
    return columns


def fresh_folder(parent: str | Path, name: str) -> Path:
    """Make ``parent/name``, or ``name-2``, ``name-3``... : an existing folder is never reused."""
    if not RUN_NAME.match(name):
        raise RunError(f"run name {name!r} must be letters, digits, '.', '_' or '-'")
    root = Path(parent)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create the runs folder {root}: {exc.strerror}") from None
    if not os.access(root, os.W_OK):
        raise RunError(f"the runs folder {root} is not writable; pass --runs-dir DIR")
    for n in range(1, 10_000):
        path = root / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()  # atomic: fails if another process took the name first
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunError(f"cannot create {path}: {exc.strerror}") from None
        return path
    raise RunError(f"{root} already holds 9,999 folders named {name!r}; choose another name")


def create_run(runs_dir: str | Path, name: str) -> Run:
    """A new run folder ``runs_dir/name`` (or ``name-2``...): never one that exists."""
    return Run(fresh_folder(runs_dir, name))


def open_run(path: str | Path | Run, model: bool = True) -> Run:
    """An existing run folder, or a RunError that says what is wrong.

    Always checked, whatever ``path`` is: a folder holding run.json and config.yaml, and with
    ``model`` (what evaluate, predict, report, export and serve need) its model.keras. Resume
    and compare open runs with ``model=False``: finished or not.
    """
    run = path if isinstance(path, Run) else Run(Path(path))
    if not run.path.is_dir():
        raise RunError(
            f"{run.path} is not a folder; pass the run folder that `cnnkit train` printed"
        )
    missing = [name for name in (RUN_FILE, CONFIG_FILE) if not run.file(name).is_file()]
    if missing:
        raise RunError(
            f"{run.path} is not a cnnkit run (no {' or '.join(missing)}); "
            f"pass the run folder that `cnnkit train` printed"
        )
    if model and not run.model_path.is_file():
        status = run.meta().get("status", "unknown")
        raise RunError(
            f"run {run.path} has no {MODEL_FILE} (status: {status}); train it to the end first"
        )
    return run


@contextlib.contextmanager
def lock_run(run: Run) -> Iterator[None]:
    """Hold the run's lock while training it: a second process cannot train or resume it too.

    The lock is the operating system's (flock), so it goes away with its process, even on SIGKILL.
    """
    import fcntl

    handle = run.file(LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunError(
            f"run {run.path} is being trained by another cnnkit process; wait for it or stop it"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def save_network(net: Any, path: Path) -> None:
    """``net.save(path)`` atomically (Keras writes the zip in place, so write beside and rename)."""
    try:
        with atomic_path(path, suffix=".keras") as tmp:
            net.save(tmp)
    except OSError as exc:
        raise RunError(
            f"could not write {path} ({exc.strerror or exc}); free some space, then resume"
        ) from None


def load_model(path: Path) -> Any:
    """Load a ``.keras`` file in Keras safe mode; a damaged or foreign file is a RunError."""
    from cnnkit.env import import_keras

    keras = import_keras()
    from cnnkit.models import list_models

    list_models()  # imports every model module, which registers cnnkit's serializable objects

    if not zipfile.is_zipfile(path):
        what = "a folder" if path.is_dir() else "not a zip archive, as a Keras 3 .keras file is"
        raise RunError(
            f"{path} is not a loadable Keras model ({what}); train the run again, or put its own "
            f"model back"
        )
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path} is not a loadable Keras model ({reason})") from None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
