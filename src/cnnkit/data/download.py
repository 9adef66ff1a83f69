"""Finding dataset files locally, and downloading them with a checksum, atomically, into a cache."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from cnnkit.atomic import atomic_path
from cnnkit.errors import DataError
from cnnkit.log import notice

DATA_DIR_ENV = "CNNKIT_DATA_DIR"
OFFLINE_ENV = "CNNKIT_OFFLINE"  # set to 1 to forbid downloads (the tests do)


def cache_dir() -> Path:
    """The user cache folder: ``$XDG_CACHE_HOME/cnnkit`` or ``~/.cache/cnnkit``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnkit"


def search_dirs() -> list[Path]:
    """Folders looked in when no explicit path is given, in order."""
    dirs = []
    if os.environ.get(DATA_DIR_ENV):
        dirs.append(Path(os.environ[DATA_DIR_ENV]).expanduser())
    dirs.append(cache_dir())
    return dirs


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: Path, md5: str, max_bytes: int) -> Path:
    """Fetch ``url`` to ``target``; the file appears only complete and with the right checksum,
    and a download that grows past ``max_bytes`` (the file's known size, with room) is stopped."""
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise DataError(f"downloads are disabled ({OFFLINE_ENV} is set)")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        notice(f"downloading {url} to {target}")
        with atomic_path(target) as tmp:  # the file appears only complete and checked
            with tmp.open("wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    if out.tell() > max_bytes:
                        raise DataError(
                            f"download of {url} is larger than {max_bytes:,} bytes; it is not "
                            f"the expected file"
                        )
            got = file_md5(tmp)
            if got != md5:
                raise DataError(f"download of {url} has md5 {got}, expected {md5}; try again later")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"could not download {url}: {reason}") from None
    return target
