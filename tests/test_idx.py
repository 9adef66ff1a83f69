"""cnnkit.data.idx: MNIST and Fashion-MNIST, read from files written here in the IDX format."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from cnnkit.config import DataConfig
from cnnkit.data import load_dataset
from cnnkit.data.idx import read_idx
from cnnkit.errors import DataError


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    """The IDX format: 0, 0, type code 0x08 (uint8), the rank, each dimension big-endian."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def write_mnist(folder: Path, n_train: int = 50, n_test: int = 20, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{part}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(folder / f"{part}-labels-idx1-ubyte", np.arange(n) % 10, gz)
    return folder


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_datasets(tmp_path: Path, name: str, gz: bool) -> None:
    folder = write_mnist(tmp_path / name, gz=gz)
    data = load_dataset(DataConfig(name=name, path=str(folder), val_split=0.2), seed=0)
    assert data.input_shape == (28, 28, 1) and data.num_classes == 10
    assert len(data.train) == 40 and len(data.val or []) == 10 and len(data.test) == 20
    images = read_idx(folder / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    assert images.shape == (50, 28, 28)
    if name == "fashion_mnist":
        assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"


def test_idx_found_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_mnist(tmp_path / "data" / "mnist")
    monkeypatch.setenv("CNNKIT_DATA_DIR", str(tmp_path / "data"))
    assert len(load_dataset(DataConfig(name="mnist", val_split=0), seed=0).train) == 50


def test_idx_damaged_files_are_clear_errors(tmp_path: Path) -> None:
    folder = write_mnist(tmp_path / "m", gz=False)
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DataError, match="damaged"):
        load_dataset(DataConfig(name="mnist", path=str(folder)), seed=0)
    images.write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(DataError, match="not an IDX file"):
        load_dataset(DataConfig(name="mnist", path=str(folder)), seed=0)
    with pytest.raises(DataError, match="lacks the MNIST files"):
        load_dataset(DataConfig(name="mnist", path=str(tmp_path)), seed=0)
    with pytest.raises(DataError, match="downloads are disabled"):  # tests never download
        load_dataset(DataConfig(name="fashion_mnist"), seed=0)
