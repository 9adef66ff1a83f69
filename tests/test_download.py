"""cnnkit.data.download: checked, atomic downloads into the user cache (from file:// URLs; the
tests never go online)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cnnkit.data import cifar
from cnnkit.data.download import download, file_md5
from cnnkit.errors import DataError
from conftest import cifar_members, write_cifar_archive


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
