"""The shape of the code (tests/architecture.py): every module in a layer, imports only down or
across, no import circle, and no module past 500 lines without a reason at its top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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
    found = {(a.source, a.target) for a in arrows()}
    assert ("cnnkit.workflow", "cnnkit.trainer") in found  # inside a function
    assert ("cnnkit.cli", "cnnkit.cli.train") in found  # by name, from cli.VERBS
    assert ("cnnkit", "cnnkit.workflow") in found  # the lazy API
    assert ("cnnkit.models", "cnnkit.models.fast_cnn") in found  # by name, models.BUILTIN
    # The package an import runs on the way: trainer imports cnnkit.data.augment, whose
    # package's __init__ runs first.
    assert ("cnnkit.trainer", "cnnkit.data") in found
    # ... and what a wrong import would make is caught: a circle, and an arrow back up.
    assert cycles({architecture.Arrow("cnnkit.env", "cnnkit.cli"), *arrows()})
    assert architecture.Arrow("cnnkit.env", "cnnkit.runs").up
    assert not architecture.Arrow("cnnkit.runs", "cnnkit.env").up


def test_a_circle_through_a_package_init_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # data/__init__.py importing a module that imports cnnkit.data.base: a circle at import
    # time (the second finds the package half-initialised), though no module imports itself.
    tree = tmp_path / "cnnkit"
    (tree / "data").mkdir(parents=True)
    (tree / "__init__.py").write_text("")
    (tree / "data" / "__init__.py").write_text("import cnnkit.optim\n")
    (tree / "data" / "base.py").write_text("")
    (tree / "optim.py").write_text("from cnnkit.data.base import x\n")
    monkeypatch.setattr(architecture, "SRC", tree)
    monkeypatch.setattr(architecture, "_by_string", lambda: iter(()))
    assert cycles(arrows()) == [["cnnkit.data", "cnnkit.optim"]]


def test_imports_by_name_come_only_from_the_known_tables() -> None:
    where = {module for module, _ in architecture.imports_by_name()}
    assert where <= architecture.BY_NAME, (
        f"an import by name outside {architecture.BY_NAME}: {sorted(where)}; give it a table "
        f"that tests/architecture.py reads (_by_string)"
    )


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


def test_every_module_has_tests_a_newcomer_can_find() -> None:
    # tests/test_<module>.py, or its package's, or the file TESTED_IN names (which must exist).
    missing = [name for name in modules() if not name.startswith("cnnkit.cli.") and
               architecture.tests_of(name) is None]  # fmt: skip
    assert not missing, f"no tests/test_<name>.py for {missing}: name one in TESTED_IN"
    tests = architecture.SRC.parents[1] / "tests"
    for module, file in architecture.TESTED_IN.items():
        assert (tests / file).is_file(), f"{module}: {file} does not exist"
