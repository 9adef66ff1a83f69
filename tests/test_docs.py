"""The API reference builds from the docstrings (Sphinx, warnings as errors) and covers the API."""

from __future__ import annotations

import html
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cnnkit
from conftest import REPO


@pytest.mark.slow
def test_api_reference_builds_and_names_every_public_function(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(REPO / "docs" / "reference"), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", page)).split())
    for name in cnnkit.__all__:
        if name == "__version__":
            continue
        assert f'id="cnnkit.{name}"' in page, f"{name} has no entry"  # an anchor cnnkit.NAME
        # ... and its docstring is on the page (its first line, literals as plain text).
        first = (inspect.getdoc(getattr(cnnkit, name)) or "").split("\n")[0]
        if first and ":" not in first.replace("``", ""):
            expected = " ".join(first.replace("``", "").split())
            assert expected in text, f"{name}: {expected!r} is not on the page"
