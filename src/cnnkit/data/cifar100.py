"""CIFAR-100 from the official python-version archive (``cifar-100-python.tar.gz``).

The same layout as CIFAR-10's (see :mod:`cnnkit.data.cifar`, which also finds, downloads and
safely unpickles it), with one ``train`` and one ``test`` batch, each image labelled twice: one of
100 fine classes and one of 20 coarse superclasses (``data.label``).
"""

from __future__ import annotations

import pickle
import tarfile

import numpy as np

from cnnkit.data.base import Source, Split
from cnnkit.data.cifar import Archive, locate, read_members, to_split
from cnnkit.errors import DataError

SPEC = Archive(
    title="CIFAR-100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    archive="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    marker="meta",
    max_member=200_000_000,  # one train batch of 50,000 images (156 MB)
)
CLASSES = {"fine": 100, "coarse": 20}


def load(path: str | None, allow_download: bool, label: str = "fine") -> Source:
    if label not in CLASSES:
        raise DataError(f"data.label must be fine or coarse for CIFAR-100, not {label!r}")
    source = locate(path, allow_download, SPEC)
    try:
        members = dict(read_members(source, {"train", "test", "meta"}, SPEC.max_member))
    except (OSError, EOFError, tarfile.TarError, pickle.UnpicklingError, ValueError) as exc:
        raise DataError(
            f"{source} is not a readable CIFAR-100 archive ({type(exc).__name__}: {exc}); "
            f"download it again or point data.path at a good copy"
        ) from None
    missing = [n for n in ("train", "test", "meta") if n not in members]
    if missing:
        raise DataError(f"{source} lacks {', '.join(missing)}; it is not a complete CIFAR-100 copy")
    key = f"{label}_labels".encode()
    names = members["meta"].get(f"{label}_label_names".encode())
    if not isinstance(names, list) or len(names) != CLASSES[label]:
        raise DataError(f"{source}: meta must list {CLASSES[label]} {label}_label_names")
    class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    train, test = (
        to_split(members[part], part, source, key, CLASSES[label]) for part in ("train", "test")
    )
    return Source(
        Split(train.x, train.y.astype(np.int64)), test, class_names, str(source),
        notes={"label": label},
    )  # fmt: skip
