from __future__ import annotations

import dataclasses
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cnnkit.config import DataConfig
from cnnkit.data import cifar, load_dataset
from cnnkit.data.base import Split, stratified_split, stratified_subset
from cnnkit.data.download import download, file_md5
from cnnkit.errors import ConfigError, DataError
from conftest import cifar_members, write_cifar_archive


def _split(n: int = 1000, classes: int = 10) -> Split:
    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, size=n)
    return Split(rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8), y)


def test_split_is_stratified_seeded_and_disjoint() -> None:
    data = _split()
    rest, held = stratified_split(data, 0.2, seed=1)
    assert held is not None
    assert len(held) == 200 and len(rest) == 800
    # Each class keeps its share (within one image) in the held-out part.
    for c in range(10):
        assert abs((held.y == c).sum() - 0.2 * (data.y == c).sum()) <= 1
    _again_rest, again_held = stratified_split(data, 0.2, seed=1)
    assert np.array_equal(again_held.x, held.x)
    _, other = stratified_split(data, 0.2, seed=2)
    assert other is not None and not np.array_equal(other.x, held.x)
    # No image is in both parts.
    keys = {bytes(x) for x in rest.x}
    assert not any(bytes(x) in keys for x in held.x)


def test_no_validation_split() -> None:
    rest, held = stratified_split(_split(), 0.0, seed=0)
    assert held is None and len(rest) == 1000


def test_subset_keeps_every_class() -> None:
    sub = stratified_subset(_split(), 100, seed=0)
    assert len(sub) == 100 and len(np.unique(sub.y)) == 10
    with pytest.raises(DataError, match="cannot hold all 10 classes"):
        stratified_subset(_split(), 5, seed=0)
    # Leaving out fewer images than there are classes (a budget that fits almost every image):
    # sklearn cannot stratify that, the subset is still drawn, seeded.
    near = stratified_subset(_split(), 995, seed=0)
    assert len(near) == 995 and len(np.unique(near.y)) == 10
    assert np.array_equal(stratified_subset(_split(), 995, seed=0).x, near.x)


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


def test_download_checks_md5_and_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CNNKIT_OFFLINE")
    source = write_cifar_archive(tmp_path / "served.tar.gz", cifar_members())
    target = tmp_path / "cache" / "cifar-10-python.tar.gz"
    size = source.stat().st_size
    with pytest.raises(DataError, match="expected 0000"):
        download(source.as_uri(), target, "0" * 32, size)
    assert not target.exists()
    assert not list(target.parent.iterdir())  # no partial file left behind
    # A download larger than the file can be is stopped there, and leaves nothing either.
    with pytest.raises(DataError, match="larger than"):
        download(source.as_uri(), target, file_md5(source), size - 1)
    assert not list(target.parent.iterdir())
    got = download(source.as_uri(), target, file_md5(source), size)
    assert got == target and file_md5(target) == file_md5(source)
    with pytest.raises(DataError, match="could not download"):
        download((tmp_path / "missing").as_uri(), tmp_path / "x", "0" * 32, size)


def test_download_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CNNKIT_OFFLINE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    source = write_cifar_archive(tmp_path / "served.tar.gz", cifar_members())
    served = dataclasses.replace(cifar.CIFAR10, url=source.as_uri(), md5=file_md5(source))
    monkeypatch.setattr(cifar, "CIFAR10", served)
    monkeypatch.setattr(cifar.locate, "__defaults__", (served,))
    first = cifar.locate(None, allow_download=True)
    assert first == tmp_path / "cache" / "cnnkit" / cifar.ARCHIVE
    source.unlink()  # a second lookup must use the cache, not the network
    assert cifar.locate(None, allow_download=True) == first


def test_digits_and_synthetic() -> None:
    digits = load_dataset(DataConfig(name="digits"), seed=0)
    assert digits.input_shape == (8, 8, 1) and digits.num_classes == 10
    assert digits.train.x.dtype == np.uint8 and digits.train.x.max() == 255
    assert len(digits.train) + len(digits.val or []) + len(digits.test) == 1797
    other = load_dataset(DataConfig(name="digits"), seed=1)
    assert np.array_equal(digits.test.x, other.test.x)  # the test split does not move with the seed
    assert other.val is not None and digits.val is not None
    assert not np.array_equal(digits.val.y, other.val.y)
    synthetic = load_dataset(DataConfig(name="synthetic", val_split=0.1), seed=0)
    assert synthetic.input_shape == (32, 32, 3) and synthetic.class_names[0] == "red"


def test_unknown_dataset() -> None:
    with pytest.raises(ConfigError, match="did you mean 'digits'"):
        load_dataset(DataConfig(name="digitz"), seed=0)
