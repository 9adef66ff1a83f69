"""MNIST and Fashion-MNIST from their official IDX files (``train-images-idx3-ubyte.gz`` ...).

IDX: a big-endian header (two zero bytes, a type code, the number of dimensions, then each
dimension as a 32-bit integer) followed by the values; the files come gzipped. Looked for in
``data.path`` (a folder holding the four files, gzipped or not), ``$CNNKIT_DATA_DIR/<name>/``,
the user cache, else downloaded from the official URLs with their md5 checked.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnkit.data.base import Source, Split
from cnnkit.data.download import DATA_DIR_ENV, download, search_dirs
from cnnkit.errors import DataError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class IdxDataset:
    title: str
    url: str  # the folder the four .gz files are in
    md5: dict[str, str]  # gzipped file name -> md5
    classes: tuple[str, ...]


DATASETS = {
    "mnist": IdxDataset(
        "MNIST",
        # yann.lecun.com, the original home, is often unreachable; this mirror serves the same files.
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        tuple(str(d) for d in range(10)),
    ),
    "fashion_mnist": IdxDataset(
        "Fashion-MNIST",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"),
    ),
}  # fmt: skip

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# The largest IDX file of these datasets is MNIST's training images, 60,000 x 28 x 28 bytes
# (47 MB): a header that claims more than this is not theirs, and is refused before it is read.
MAX_IDX_BYTES = 100_000_000
MAX_GZ_BYTES = 20_000_000  # a download larger than this is not one of the four files (10 MB)


def read_idx(path: Path, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array; a malformed file, or one whose header
    claims more than ``max_bytes`` of values, is a DataError. Only what the header claims is
    read (and one byte more, to notice a longer file), however much the file inflates to."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
                raise DataError(f"{path} is not an IDX file (bad magic number)")
            ndim = head[3]
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataError(f"{path} is truncated (header)")
            shape = struct.unpack(f">{ndim}I", dims)
            dtype = np.dtype(_DTYPES[head[2]])
            expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if expected > max_bytes:
                raise DataError(
                    f"{path} claims {expected:,} bytes of values ({' x '.join(map(str, shape))}), "
                    f"more than these datasets hold ({max_bytes:,}); it is not an official file"
                )
            data = f.read(expected + 1)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not readable ({exc}); download it again") from None
    if len(data) != expected:
        raise DataError(
            f"{path} holds {'more than ' if len(data) > expected else ''}{min(len(data), expected)}"
            f" bytes of values, its header says {expected}; the file is damaged"
        )
    return np.frombuffer(data, dtype).reshape(shape)


def locate(name: str, path: str | None, allow_download: bool) -> dict[str, Path]:
    """The four files, each gzipped or not, from data.path, the data dir, the cache or a download."""
    spec = DATASETS[name]
    if path:
        candidates = [Path(path).expanduser()]
    else:
        candidates = [d / name for d in search_dirs()] + search_dirs()
    for folder in candidates:
        found = _find(folder)
        if found is not None:
            return found
    if path:
        raise DataError(
            f"data.path={path} lacks the {spec.title} files ({', '.join(FILES.values())}, "
            f"gzipped or not); point it at the folder that holds them"
        )
    where = ", ".join(str(c) for c in candidates)
    hint = f"pass data.path=DIR or put the files in ${DATA_DIR_ENV}/{name}/"
    if not allow_download:
        raise DataError(f"{spec.title} not found in {where} and data.download=false; {hint}")
    target = search_dirs()[-1] / name
    try:
        for file, md5 in spec.md5.items():
            if not (target / file).is_file():
                download(spec.url + file, target / file, md5, MAX_GZ_BYTES)
    except DataError as exc:
        raise DataError(f"{spec.title} not found in {where} and {exc}; {hint}") from None
    found = _find(target)
    assert found is not None
    return found


def _find(folder: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in FILES.items():
        options = [folder / f"{stem}.gz", folder / stem]
        existing = [p for p in options if p.is_file()]
        if not existing:
            return None
        found[key] = existing[0]
    return found


def load(name: str, path: str | None, allow_download: bool) -> Source:
    spec = DATASETS[name]
    files = locate(name, path, allow_download)
    splits = []
    for part in ("train", "test"):
        images, labels = read_idx(files[f"{part}_images"]), read_idx(files[f"{part}_labels"])
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(f"{files[part + '_images']}: expected uint8 images (N, H, W)")
        if labels.shape != (len(images),):
            raise DataError(
                f"{files[part + '_labels']}: {len(labels)} labels for {len(images)} images"
            )
        y = labels.astype(np.int64)
        if len(y) and (y.min() < 0 or y.max() >= len(spec.classes)):
            raise DataError(f"{files[part + '_labels']}: labels must be in 0..9")
        splits.append(Split(np.ascontiguousarray(images[..., np.newaxis]), y))
    return Source(splits[0], splits[1], spec.classes, str(files["train_images"].parent))
