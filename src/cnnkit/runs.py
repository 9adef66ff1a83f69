"""Run folders: created fresh (never overwritten), opened by every verb that uses a trained model.

A run folder holds everything needed to rebuild, evaluate and use the model::

    runs/<name>/
      run.json                 status, classes, input shape, dataset, precision, timings
      config.yaml              the resolved config
      env.json                 versions, backend, CPU and accelerators
      model.keras              the model predict/evaluate use (best or last, per train.keep)
      checkpoints/best.keras   best by train.monitor;  checkpoints/last.keras  the last epoch
      history.csv              one row per epoch
      metrics.json             test metrics: loss, accuracy, per-class P/R/F1, confusion matrix
      predictions.npz          the test set's predicted probabilities and labels
      classification_report.txt, model_summary.txt
      report.html              the report page, self-contained (report.py); report.json its numbers
      figures/*.png            every picture of the report
      tensorboard/             with train.tensorboard=true
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cnnkit.config import Config
from cnnkit.errors import RunError

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.keras"
LOCK_FILE = ".lock"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Run:
    """A run folder on disk."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def file(self, name: str) -> Path:
        return self.path / name

    def meta(self) -> dict[str, Any]:
        try:
            loaded = json.loads((self.path / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(
                f"{self.path / RUN_FILE} is unreadable ({exc}); the run is damaged"
            ) from None
        if not isinstance(loaded, dict):
            raise RunError(f"{self.path / RUN_FILE} is not a run record")
        return loaded

    def update_meta(self, **values: Any) -> dict[str, Any]:
        meta = self.meta() if (self.path / RUN_FILE).exists() else {}
        meta.update(values)
        write_json(self.path / RUN_FILE, meta)
        return meta

    def config(self) -> Config:
        import yaml

        from cnnkit.errors import ConfigError

        try:
            values = yaml.safe_load((self.path / CONFIG_FILE).read_text(encoding="utf-8"))
            return Config.from_dict(values or {})
        except (OSError, yaml.YAMLError, ConfigError, TypeError, AttributeError) as exc:
            raise RunError(f"{self.path / CONFIG_FILE} is unreadable ({exc})") from None

    @property
    def class_names(self) -> list[str]:
        return list(self.meta()["classes"])

    @property
    def complete(self) -> bool:
        return self.meta().get("status") == "complete"


def create_run(runs_dir: str | Path, name: str) -> Run:
    """Make ``runs_dir/name``, or ``name-2``, ``name-3``... : an existing folder is never reused."""
    if not _NAME.match(name):
        raise RunError(f"run name {name!r} must be letters, digits, '.', '_' or '-'")
    root = Path(runs_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create the runs folder {root}: {exc.strerror}") from None
    if not os.access(root, os.W_OK):
        raise RunError(f"the runs folder {root} is not writable; pass --runs-dir DIR")
    for n in range(1, 10_000):
        path = root / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()  # atomic: fails if another run took the name first
        except FileExistsError:
            continue
        except OSError as exc:
            raise RunError(f"cannot create {path}: {exc.strerror}") from None
        return Run(path)
    raise RunError(f"{root} already holds 9,999 runs named {name!r}; choose another name")


@contextlib.contextmanager
def lock_run(run: Run) -> Iterator[None]:
    """Hold the run's lock while training it: a second process cannot train or resume it too.

    The lock is the operating system's (flock), so it goes away with its process, even on SIGKILL.
    """
    import fcntl

    handle = (run.path / LOCK_FILE).open("a+")
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


def require_free_space(folder: Path, needed: int) -> None:
    """Refuse to start when checkpoints cannot fit, rather than failing an hour later."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise RunError(
            f"{folder} has {free / 1e6:.0f} MB free; training needs about {needed / 1e6:.0f} MB for "
            f"checkpoints: free some space or pass --runs-dir on another disk"
        )


def open_run_folder(path: str | Path | Run) -> Run:
    """An existing run folder, finished or not (run.json and config.yaml), or a RunError."""
    run = path if isinstance(path, Run) else Run(Path(path))
    if not run.path.is_dir():
        raise RunError(
            f"{run.path} is not a folder; pass the run folder that `cnnkit train` printed"
        )
    if not run.file(RUN_FILE).is_file() or not run.file(CONFIG_FILE).is_file():
        raise RunError(f"{run.path} is not a cnnkit run (no {RUN_FILE} or {CONFIG_FILE})")
    return run


def open_run(path: str | Path | Run) -> Run:
    """An existing run folder with a model, or a RunError that says what is wrong."""
    if isinstance(path, Run):
        return path
    folder = Path(path)
    if not folder.is_dir():
        raise RunError(f"{folder} is not a folder; pass the run folder that `cnnkit train` printed")
    if not (folder / RUN_FILE).is_file():
        raise RunError(
            f"{folder} is not a cnnkit run (no {RUN_FILE}); "
            f"pass the run folder that `cnnkit train` printed"
        )
    run = Run(folder)
    if not run.model_path.is_file():
        status = run.meta().get("status", "unknown")
        raise RunError(
            f"run {folder} has no {MODEL_FILE} (status: {status}); train it to the end first"
        )
    return run


def load_model(path: Path) -> Any:
    """Load a ``.keras`` file in Keras safe mode; a damaged or foreign file is a RunError."""
    from cnnkit.env import import_keras

    keras = import_keras()
    from cnnkit.models import list_models

    list_models()  # imports every model module, which registers cnnkit's serializable objects

    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a bad file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path} is not a loadable Keras model ({reason})") from None


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically: a crash leaves the old file or the new one, never half of one."""
    write_text(path, json.dumps(value, indent=2, default=_jsonable) + "\n")


def write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a run's files read like any other
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
