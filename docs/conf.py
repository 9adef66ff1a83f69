"""Sphinx configuration of cnnkit's documentation site: ``make docs`` -> build/docs/index.html.

Pages are Markdown (MyST) with the furo theme; the API reference is the package's docstrings
(autodoc), and the configuration, command-line and error references are generated from the code
at every build by the local extension ``_ext/cnnkit_docs.py``, so that they cannot drift from it.
The test suite builds the site with warnings as errors (tests/test_docs.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent / "src"))  # the checkout's cnnkit, installed or not

project = "cnnkit"
author = "cnnkit developers"
copyright = "2026, cnnkit developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "cnnkit_docs"]
root_doc = "index"
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
# Measurement data (JSON, logs, example pages) beside the benchmark pages: linked, not pages.
exclude_patterns = ["_build", "benchmarks/data/**"]
html_theme = "furo"
html_title = "cnnkit"
html_static_path: list[str] = []
html_show_sourcelink = False
# Headings up to ### get anchors that links (README's too) can point at: page.md#a-heading.
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# The docstrings are written to be read in the source too: ``literal`` and :func: roles only.
default_role = "literal"
# Apostrophes and quotes as written (the tests find each docstring's first line on the page).
smartquotes = False
