"""Atomic writes: a crash at any instant leaves the old file or the new one, never half of one.

Every file cnnkit writes (run files, checkpoints, networks, exports, decoded-image caches,
downloads) goes through here: write a temporary file beside the target, flush it to disk
(fsync), rename it over the target, then fsync the folder so that the rename itself survives a
power cut. Temporary files are named ``.<name>.<random>.tmp[<suffix>]``, so that
:func:`remove_stale` finds what a killed process left behind and two processes never write the
same temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(target: Path, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``target`` for a writer that wants a path (Keras's ``save``, an
    exporter that writes a folder); when the block ends without an error, what was written there
    is flushed to disk and renamed to ``target``. On an error the temporary file or folder is
    removed and ``target`` is left as it was.

    ``suffix``: an ending the writer insists on (Keras saves only to ``*.keras``). A folder
    replaces an existing folder at ``target`` (removed just before the rename: the new content
    still only appears complete).
    """
    target = Path(target)
    handle, name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent
    )
    os.close(handle)
    tmp = Path(name)
    tmp.unlink()  # the writer creates it (a file or a folder); the name is ours
    try:
        yield tmp
        _fsync_tree(tmp)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
        fsync_folder(target.parent)
    finally:
        remove(tmp)


@contextlib.contextmanager
def atomic_write(target: Path, text: bool = False) -> Iterator[IO[Any]]:
    """An open file (binary, or UTF-8 text) whose content becomes ``target`` when the block ends
    without an error. The file reads like any other (mkstemp's 0600 is widened to the umask)."""
    target = Path(target)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(handle, 0o666 & ~_UMASK)
        with os.fdopen(
            handle, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})
        ) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, target)
        fsync_folder(target.parent)
    finally:
        Path(name).unlink(missing_ok=True)


def write_text(target: Path, text: str) -> None:
    with atomic_write(target, text=True) as f:
        f.write(text)


def write_json(target: Path, value: Any) -> None:
    """``value`` as indented JSON (numpy arrays and scalars as lists and numbers, paths as text)."""
    write_text(target, json.dumps(value, indent=2, default=_jsonable) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file's value (OSError or ValueError when it is missing or not JSON)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def remove_stale(folder: Path) -> None:
    """Remove the temporary files and folders a killed writer left in ``folder`` (the files they
    would have replaced are intact)."""
    for tmp in Path(folder).glob(".*.tmp*"):
        remove(tmp)


def remove(path: Path) -> None:
    """Remove a file or a folder, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for item in sorted(path.rglob("*")):
            if item.is_file() and not item.is_symlink():
                _fsync_file(item)
        for item in [path, *(p for p in path.rglob("*") if p.is_dir())]:
            fsync_folder(item)
    elif path.is_file():
        _fsync_file(path)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
