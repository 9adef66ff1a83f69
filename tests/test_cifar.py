"""cnnkit.data.cifar and cnnkit.data.cifar100: the CIFAR-10 and CIFAR-100 readers, on archives
written here in the official python-version formats."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cnnkit.config import DataConfig
from cnnkit.data import cifar, load_dataset
from cnnkit.errors import DataError
from cnnkit.runs import Run
from conftest import cifar_members, cli, last_line, write_cifar_archive


@pytest.mark.parametrize("form", ["archive", "folder", "parent-of-archive", "parent-of-folder"])
def test_cifar_reader_takes_archive_or_folder(
    tmp_path: Path, cifar_archive: Path, form: str
) -> None:
    if form == "archive":
        path = cifar_archive
    elif form == "parent-of-archive":
        path = cifar_archive.parent
    else:
        out = tmp_path / "extracted"
        with tarfile.open(cifar_archive) as archive:
            archive.extractall(out, filter="data")
        path = out / "cifar-10-batches-py" if form == "folder" else out
    src = cifar.load(str(path), allow_download=False)
    train, test, names = src.train, src.test, src.class_names
    assert train.x.shape == (150, 32, 32, 3) and test.x.shape == (30, 32, 32, 3)
    assert names[0] == "airplane" and len(names) == 10
    # The planes are R, G, B: pixel (0, 0) of image 0 is data[0, 0], data[0, 1024], data[0, 2048].
    raw = pickle.loads(cifar_members()["data_batch_1"], encoding="bytes")[b"data"]
    assert list(train.x[0, 0, 0]) == [raw[0, 0], raw[0, 1024], raw[0, 2048]]
    assert list(train.x[0, 0, 1]) == [raw[0, 1], raw[0, 1025], raw[0, 2049]]


def test_cifar_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir, cache = tmp_path / "env", tmp_path / "cache"
    for folder in (env_dir, cache / "cnnkit"):
        folder.mkdir(parents=True)
        write_cifar_archive(folder / cifar.ARCHIVE, cifar_members())
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("CNNKIT_DATA_DIR", str(env_dir))
    explicit = write_cifar_archive(tmp_path / "mine.tar.gz", cifar_members())
    assert cifar.locate(str(explicit), False) == explicit
    assert cifar.locate(None, False) == env_dir / cifar.ARCHIVE
    monkeypatch.delenv("CNNKIT_DATA_DIR")
    assert cifar.locate(None, False) == cache / "cnnkit" / cifar.ARCHIVE


def test_missing_cifar_names_the_flag_and_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for allow in (False, True):  # True: the download is refused by CNNKIT_OFFLINE
        with pytest.raises(DataError) as info:
            cifar.locate(None, allow)
        assert "data.path=" in str(info.value) and "CNNKIT_DATA_DIR" in str(info.value)
    with pytest.raises(DataError, match=r"holds no cifar-10-python\.tar\.gz"):
        cifar.locate(str(tmp_path / "nowhere"), True)


def test_corrupt_archive(tmp_path: Path) -> None:
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(DataError, match="not a readable CIFAR-10 archive"):
        cifar.load(str(bad), False)
    good = write_cifar_archive(tmp_path / "good.tar.gz", cifar_members())
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="not a readable CIFAR-10 archive"):
        cifar.load(str(truncated), False)


def test_incomplete_and_misshapen_archives(tmp_path: Path) -> None:
    members = cifar_members()
    del members["data_batch_3"]
    with pytest.raises(DataError, match="lacks data_batch_3"):
        cifar.load(str(write_cifar_archive(tmp_path / "a.tar.gz", members)), False)
    members = cifar_members()
    batch = pickle.loads(members["test_batch"], encoding="bytes")
    batch[b"data"] = batch[b"data"][:, :100]
    members["test_batch"] = pickle.dumps(batch, protocol=2)
    with pytest.raises(DataError, match=r"shape \(N, 3072\)"):
        cifar.load(str(write_cifar_archive(tmp_path / "b.tar.gz", members)), False)
    members = cifar_members()
    batch = pickle.loads(members["data_batch_1"], encoding="bytes")
    batch[b"labels"][0] = 12
    members["data_batch_1"] = pickle.dumps(batch, protocol=2)
    with pytest.raises(DataError, match=r"labels in 0\.\.9"):
        cifar.load(str(write_cifar_archive(tmp_path / "c.tar.gz", members)), False)


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("echo pwned",))


def test_pickles_cannot_run_code(tmp_path: Path) -> None:
    members = cifar_members()
    members["batches.meta"] = pickle.dumps({b"label_names": _Evil()}, protocol=2)
    with pytest.raises(DataError, match="refusing to load"):
        cifar.load(str(write_cifar_archive(tmp_path / "evil.tar.gz", members)), False)


def write_cifar100(path: Path, n: int = 200) -> Path:
    rng = np.random.default_rng(0)

    def batch(rows: int) -> bytes:
        fine = rng.permutation(np.arange(rows) % 100).tolist()
        return pickle.dumps(
            {
                b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
                b"fine_labels": fine,
                b"coarse_labels": [f // 5 for f in fine],
                b"filenames": [b"x.png"] * rows,
            },
            protocol=2,
        )

    meta = pickle.dumps(
        {
            b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)],
        },
        protocol=2,
    )
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in (("train", batch(n)), ("test", batch(n // 2)), ("meta", meta)):
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    archive = write_cifar100(tmp_path / "cifar-100-python.tar.gz")
    fine = load_dataset(DataConfig(name="cifar100", path=str(archive), val_split=0), seed=0)
    assert fine.num_classes == 100 and fine.class_names[7] == "fine07"
    assert fine.input_shape == (32, 32, 3) and len(fine.train) == 200 and len(fine.test) == 100
    coarse = load_dataset(
        DataConfig(name="cifar100", path=str(tmp_path), label="coarse", val_split=0), seed=0
    )
    assert coarse.num_classes == 20 and coarse.class_names[0] == "coarse00"
    assert np.array_equal(coarse.train.y, fine.train.y // 5)  # same images, other labels
    assert np.array_equal(coarse.train.x, fine.train.x)


def test_cifar100_damaged_archive(tmp_path: Path) -> None:
    bad = tmp_path / "cifar-100-python.tar.gz"
    bad.write_bytes(b"not a tar file")
    with pytest.raises(DataError, match="not a readable CIFAR-100 archive"):
        load_dataset(DataConfig(name="cifar100", path=str(bad)), seed=0)


@pytest.mark.slow
def test_cifar_archive_in_the_official_format_trains(tmp_path: Path) -> None:
    archive = write_cifar_archive(
        tmp_path / "cifar-10-python.tar.gz", __import__("conftest").cifar_members()
    )
    result = cli(
        "train",
        "--runs-dir",
        str(tmp_path / "runs"),
        f"data.path={archive}",
        "train.epochs=1",
        "train.batch_size=64",
        "report.enabled=false",
    )
    run = last_line(result)
    assert run.name == "fast"  # the default preset
    meta = Run(run).meta()
    # fast: no validation split, so 5 % (here the minimum, one image a class) calibrates.
    assert meta["dataset"]["test"] == 30 and meta["dataset"]["val"] == 0
    assert meta["dataset"]["train"] == 140 and meta["dataset"]["calibration"] == 10
    assert meta["model"] == "fast_cnn"
