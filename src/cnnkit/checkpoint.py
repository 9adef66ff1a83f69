"""The full training state, saved atomically so that a crash at any instant leaves one readable copy.

``checkpoints/state.npz`` holds every variable of the training model (weights, BatchNorm
statistics and the random-generator states of dropout and augmentation), every optimizer variable
(step count, learning rate, moments) and a JSON record: the position (epoch and step within it),
the history so far, the best value so far, and the running metrics of a part-done epoch.

It is a plain ``.npz`` read with ``allow_pickle=False``: loading a foreign file cannot run code.
A file that does not match the model (another run's, a damaged one) is refused with a RunError.
"""

from __future__ import annotations

import json
import logging
import re
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.atomic import atomic_write
from cnnkit.errors import RunError

FORMAT = 1
log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Where training stands: ``epoch`` epochs done, plus ``step`` batches of the next one."""

    epoch: int = 0
    step: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    best: float | None = None  # best value of train.monitor so far
    best_epoch: int | None = None  # 1-based
    # Running training metrics and sample count of a part-done epoch, to complete it exactly.
    partial_logs: dict[str, float] = field(default_factory=dict)
    partial_samples: int = 0
    partial_seconds: float = 0.0
    seconds: float = 0.0  # training time so far, over every session
    saved_at: float = 0.0  # time.time() of the save

    @property
    def position(self) -> str:
        return (
            f"epoch {self.epoch + 1}, step {self.step}"
            if self.step
            else f"end of epoch {self.epoch}"
        )


def save_state(path: Path, model: Any, state: TrainState) -> None:
    """Write model and optimizer variables plus ``state`` to ``path``: temporary file, fsync, rename."""
    state.saved_at = time.time()
    arrays: dict[str, np.ndarray] = {}
    manifest = []
    for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
        for i, variable in enumerate(variables):
            value = np.asarray(variable)
            arrays[f"{prefix}/{i:04d}"] = value
            manifest.append([prefix, variable.path, list(value.shape), str(value.dtype)])
    record = {"format": FORMAT, "state": asdict(state), "manifest": manifest}
    arrays["record"] = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    try:
        with atomic_write(path) as f:
            np.savez(f, **arrays)
        log.debug("checkpoint committed at %s", state.position)
    except OSError as exc:
        raise RunError(
            f"could not write the checkpoint {path} ({exc.strerror or exc}); the previous one is intact: "
            f"free some space, then resume"
        ) from None


def load_state(path: Path, model: Any) -> TrainState:
    """Restore ``model`` (compiled) and its optimizer from ``path``; return the saved position."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            record = json.loads(bytes(npz["record"]).decode())
            arrays = {name: npz[name] for name in npz.files if name != "record"}
    except FileNotFoundError:
        raise RunError(f"{path} does not exist") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise RunError(
            f"checkpoint {path} is damaged ({type(exc).__name__}); it cannot be resumed from"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RunError(f"{path} is not a cnnkit checkpoint (format {record.get('format')!r})")
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    groups = {"model": list(model.variables), "optimizer": list(model.optimizer.variables)}
    saved = [(m[0], _generic(m[1]), list(m[2])) for m in record["manifest"]]
    expected = [(p, _generic(v.path), list(v.shape)) for p, vs in groups.items() for v in vs]
    if saved != expected:
        raise RunError(
            f"checkpoint {path} does not match this run's model; it belongs to another run"
        )
    for prefix, variables in groups.items():
        for i, variable in enumerate(variables):
            variable.assign(arrays[f"{prefix}/{i:04d}"])
    return TrainState(**record["state"])


def saved_position(path: Path) -> tuple[int, int]:
    """(epochs done, steps into the next) of the checkpoint at ``path``; (0, 0) if unreadable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            state = json.loads(bytes(npz["record"]).decode())["state"]
            return int(state["epoch"]), int(state["step"])
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return 0, 0


def _generic(path: str) -> str:
    # Keras numbers repeated names (seed_generator_4) by creation order within a process.
    return re.sub(r"_\d+(?=/|$)", "", path)
