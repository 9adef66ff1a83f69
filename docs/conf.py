"""Sphinx configuration of cnnkit's API reference (``make docs``; built by the test suite).

The pages are the package's own docstrings (autodoc); nothing here is hosted.
"""

from __future__ import annotations

project = "cnnkit"
author = "cnnkit developers"
copyright = "2026, cnnkit developers"  # noqa: A001
extensions = ["sphinx.ext.autodoc"]
root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# The docstrings are written to be read in the source too: ``literal`` and :func: roles only.
default_role = "literal"
# Apostrophes and quotes as written (the tests find each docstring's first line on the page).
smartquotes = False
