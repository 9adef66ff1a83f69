"""The shape of the code (tests/architecture.py): every module in a layer, imports only down or
across, no import circle, and no module past 500 lines without a reason at its top."""

from __future__ import annotations

import ast

import architecture
from architecture import ALLOWED_UP, LAYERS, arrows, cycles, layer_of, modules

LONG = 500


def test_every_module_has_a_layer() -> None:
    missing = [name for name in modules() if layer_of(name) is None]
    assert not missing, f"put these in a layer of tests/architecture.py LAYERS: {missing}"


def test_no_import_circle() -> None:
    assert cycles(arrows()) == []


def test_imports_run_down_or_across() -> None:
    up = {(a.source, a.target) for a in arrows() if a.up}
    unexplained = sorted(up - set(ALLOWED_UP))
    names = {i: name for i, (name, _, _) in enumerate(LAYERS)}
    assert not unexplained, "imports that run back up a layer: " + ", ".join(
        f"{s} ({names[layer_of(s)]}) -> {t} ({names[layer_of(t)]})" for s, t in unexplained
    )
    assert len(ALLOWED_UP) <= 2
    assert all(reason.strip() for reason in ALLOWED_UP.values())


def test_the_graph_sees_every_kind_of_import() -> None:
    # A function-level import, a relative-free "from x import y" of a module, and one by string.
    found = {(a.source, a.target) for a in arrows()}
    assert ("cnnkit.workflow", "cnnkit.trainer") in found  # inside a function
    assert ("cnnkit.cli", "cnnkit.cli.train") in found  # by name, from cli.VERBS
    assert ("cnnkit", "cnnkit.workflow") in found  # the lazy API
    # ... and a circle would be found.
    made_up = {architecture.Arrow("cnnkit.env", "cnnkit.cli"), *arrows()}
    assert cycles(made_up)


def test_long_modules_say_why() -> None:
    silent = []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > LONG:
            doc = ast.get_docstring(ast.parse(text)) or ""
            if "Over 500 lines" not in doc:
                silent.append(f"{name} ({len(text.splitlines())} lines)")
    assert not silent, (
        f"split these, or give the reason at the top ('Over 500 lines: ...'): {silent}"
    )
