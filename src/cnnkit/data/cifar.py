"""CIFAR-10 from the official python-version archive (``cifar-10-python.tar.gz``).

Looked for in this order: ``data.path``; ``$CNNKIT_DATA_DIR``; the user cache; else downloaded
from the official URL, its md5 checked, and cached. The archive's batches are Python pickles, so
they are read with an unpickler that only rebuilds numpy arrays: a foreign file cannot run code.
"""

from __future__ import annotations

import codecs
import io
import pickle
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.base import Source, Split
from cnnkit.data.download import DATA_DIR_ENV, download, search_dirs
from cnnkit.errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
CLASSES = 10


@dataclass(frozen=True)
class Archive:
    """An official python-version archive: where it comes from and what it holds."""

    title: str
    url: str
    md5: str
    archive: str
    folder: str
    marker: str  # a file that only an extracted copy has
    # The largest batch file the format holds (images x 3,072 bytes, their labels and file
    # names, with room to spare): a member or file claiming more is refused before it is read.
    max_member: int = 40_000_000  # CIFAR-10: 10,000 images a batch (31 MB)
    max_archive: int = 250_000_000  # a download larger than this is not the archive (163 MB)


CIFAR10 = Archive("CIFAR-10", URL, MD5, ARCHIVE, FOLDER, META)


def locate(path: str | None, allow_download: bool, spec: Archive = CIFAR10) -> Path:
    """The archive or extracted folder to read, downloading it into the cache if need be."""
    if path:
        found = _find_in(Path(path).expanduser(), spec)
        if found is None:
            raise DataError(
                f"data.path={path} holds no {spec.archive} or {spec.folder}/; point it at the "
                f"archive, the extracted folder, or the folder that holds either"
            )
        return found
    looked = search_dirs()
    for folder in looked:
        found = _find_in(folder, spec)
        if found is not None:
            return found
    hint = (
        f"pass data.path=/path/to/{spec.archive} or set {DATA_DIR_ENV} to the folder that holds it"
    )
    where = ", ".join(str(d) for d in looked)
    if not allow_download:
        raise DataError(f"{spec.title} not found in {where} and data.download=false; {hint}")
    try:
        return download(spec.url, looked[-1] / spec.archive, spec.md5, spec.max_archive)
    except DataError as exc:
        raise DataError(f"{spec.title} not found in {where} and {exc}; {hint}") from None


def _find_in(path: Path, spec: Archive) -> Path | None:
    if path.is_file():
        return path
    if (path / spec.marker).is_file():
        return path
    for candidate in (path / spec.folder, path / spec.archive):
        if candidate.exists():
            return candidate
    return None


def load(path: str | None, allow_download: bool) -> Source:
    """Read CIFAR-10's training and test batches."""
    source = locate(path, allow_download)
    try:
        batches = dict(read_members(source, {*TRAIN_BATCHES, TEST_BATCH, META}, CIFAR10.max_member))
    except DataError:
        raise
    except (OSError, EOFError, tarfile.TarError, pickle.UnpicklingError, ValueError) as exc:
        raise DataError(
            f"{source} is not a readable CIFAR-10 archive ({type(exc).__name__}: {exc}); "
            f"download it again or point data.path at a good copy"
        ) from None
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH, META) if n not in batches]
    if missing:
        raise DataError(f"{source} lacks {', '.join(missing)}; it is not a complete CIFAR-10 copy")
    names = _class_names(batches[META], source)
    train = [to_split(batches[n], n, source) for n in TRAIN_BATCHES]
    x = np.concatenate([s.x for s in train])
    y = np.concatenate([s.y for s in train])
    return Source(
        Split(x, y), to_split(batches[TEST_BATCH], TEST_BATCH, source), names, str(source)
    )


MAX_MEMBERS = 1_000  # the archives hold 8 or 5 files: walking more is not reading CIFAR


def read_members(
    source: Path, wanted: set[str], max_member: int = CIFAR10.max_member
) -> Iterator[tuple[str, dict[bytes, Any]]]:
    """The pickled dicts named ``wanted`` from an archive or an extracted folder; a file or
    member larger than ``max_member`` bytes (by its header, and by what is really read) is a
    DataError before it is read, so that memory is bounded by the format, not by the file."""
    if source.is_dir():
        for name in wanted:
            file = source / name
            if file.is_file():
                _check_size(f"{file}", file.stat().st_size, max_member)
                with file.open("rb") as f:
                    yield name, safe_unpickle(io.BytesIO(_read_at_most(f, max_member, file)))
        return
    with tarfile.open(source, "r:*") as archive:
        for count, member in enumerate(archive):
            if count >= MAX_MEMBERS:
                raise DataError(
                    f"{source} holds more than {MAX_MEMBERS:,} files; not a CIFAR archive"
                )
            name = Path(member.name).name
            if member.isfile() and name in wanted:
                _check_size(f"{source}: {member.name}", member.size, max_member)
                handle = archive.extractfile(member)
                if handle is not None:
                    data = _read_at_most(handle, max_member, source)
                    yield name, safe_unpickle(io.BytesIO(data))


def _check_size(where: str, size: int, limit: int) -> None:
    if size > limit:
        raise DataError(
            f"{where} is {size:,} bytes, more than a batch of this dataset can be "
            f"({limit:,}); it is not an official copy: download it again"
        )


def _read_at_most(handle: Any, limit: int, where: Path) -> bytes:
    data = handle.read(limit + 1)
    _check_size(str(where), len(data), limit)
    return bytes(data)


def _class_names(meta: dict[bytes, Any], source: Path) -> tuple[str, ...]:
    names = meta.get(b"label_names")
    if not isinstance(names, list) or len(names) != CLASSES:
        raise DataError(f"{source}: {META} must list {CLASSES} label_names")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def to_split(
    batch: dict[bytes, Any],
    name: str,
    source: Path,
    label_key: bytes = b"labels",
    classes: int = CLASSES,
) -> Split:
    """A batch's (N, 3072) rows as (N, 32, 32, 3) images, with its labels checked."""
    data, labels = batch.get(b"data"), batch.get(label_key)
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or (data.shape[1] != 3 * 32 * 32)
    ):
        shape = getattr(data, "shape", None)
        raise DataError(f"{source}: {name} must hold uint8 data of shape (N, 3072), got {shape}")
    y = np.asarray(labels, dtype=np.int64)
    if y.shape != (len(data),) or (len(y) and (y.min() < 0 or y.max() >= classes)):
        raise DataError(
            f"{source}: {name} must hold {len(data)} {label_key.decode()} in 0..{classes - 1}"
        )
    # Rows are the red plane, then green, then blue, each 32x32 row-major: to (N, 32, 32, 3).
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(x), y)


# Only what numpy needs to rebuild an array; anything else in a pickle is refused.
_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {}


def _allowed() -> dict[tuple[str, str], Callable[..., Any]]:
    if not _ALLOWED:
        from numpy._core import multiarray

        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            _ALLOWED[(module, "_reconstruct")] = multiarray._reconstruct
            _ALLOWED[(module, "scalar")] = multiarray.scalar
        _ALLOWED[("numpy", "ndarray")] = np.ndarray
        _ALLOWED[("numpy", "dtype")] = np.dtype
        # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1").
        _ALLOWED[("_codecs", "encode")] = codecs.encode
    return _ALLOWED


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _allowed()[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def safe_unpickle(f: Any) -> dict[bytes, Any]:
    loaded = _ArrayUnpickler(f, encoding="bytes").load()
    if not isinstance(loaded, dict):
        raise pickle.UnpicklingError("a batch must be a dict")
    return loaded
