"""The shape of the code: cnnkit's modules in layers, and every import between them.

A module imports only from its own layer or the ones below it, and the imports form no circle
(tests/test_architecture.py checks both). Every import counts: at module level, inside functions,
the packages whose ``__init__`` an import runs on the way, and the names imported by string
(only from three tables, which the test holds to: the package's lazy API, the command's verbs,
the built-in models); only ``if TYPE_CHECKING:`` blocks, which never run, are left out. The development page
of the site shows this table (docs/development/index.md).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "cnnkit"

# Bottom to top: (name, what its modules are, module patterns; "x*" is x and all inside it).
LAYERS: list[tuple[str, str, list[str]]] = [
    ("foundation", "errors, messages, atomic writes, the machine and what a run needs of it",
     ["cnnkit.errors", "cnnkit.log", "cnnkit.atomic", "cnnkit.env", "cnnkit.resources"]),
    ("configuration", "the schema, presets, and resolving a config",
     ["cnnkit.config*"]),
    ("parts", "data sources, models, the optimizer, the checkpoint format, calibration's and the "
     "report's numbers, processes that train together",
     ["cnnkit.data*", "cnnkit.models*", "cnnkit.optim", "cnnkit.checkpoint",
      "cnnkit.calibration", "cnnkit.analysis", "cnnkit.distributed"]),
    ("run folder and scores", "the run folder's files, test metrics, Grad-CAM",
     ["cnnkit.runs", "cnnkit.metrics", "cnnkit.explain"]),
    ("engines", "the training loop and its time budget, inference, export, pictures and pages",
     ["cnnkit.trainer", "cnnkit.budget", "cnnkit.predictor", "cnnkit.exporter",
      "cnnkit.figures", "cnnkit.pages"]),
    ("verbs", "one module (or package) per verb of the API",
     ["cnnkit.workflow", "cnnkit.reporter", "cnnkit.comparison", "cnnkit.service",
      "cnnkit.tuning*", "cnnkit.launcher", "cnnkit.data.inspection"]),
    ("faces", "the package's lazy API and the command line",
     ["cnnkit", "cnnkit.cli*", "cnnkit.__main__"]),
]  # fmt: skip

# Where a module's tests are when there is no tests/test_<its name>.py (nor one of its
# package's): the file that holds them, and why it is named otherwise.
TESTED_IN: dict[str, str] = {
    "cnnkit": "test_api.py",  # the package face: the API as a whole
    "cnnkit.__main__": "test_cli.py",
    "cnnkit.workflow": "test_api.py",  # train, resume and evaluate are the API's first verbs
    "cnnkit.trainer": "test_checkpoint.py",  # the resumable fit loop and its commits
    "cnnkit.atomic": "test_checkpoint.py",  # kills at random instants, during a write too
    "cnnkit.resources": "test_hostile_refusals.py",  # a run refused before its folder exists
    "cnnkit.launcher": "test_distributed.py",  # cnnkit launch with its processes
    "cnnkit.pages": "test_reporter.py",  # the pages, opened in a browser
    "cnnkit.log": "test_hostile_output.py",  # what messages may and may not print
    "cnnkit.errors": "test_cli.py",  # one line and exit status 2, for every verb
    "cnnkit.data.base": "test_data.py",
    "cnnkit.data.digits": "test_data.py",
    "cnnkit.data.synthetic": "test_data.py",
    "cnnkit.data.cifar100": "test_cifar.py",
    "cnnkit.data.inspection": "test_folder.py",  # cnnkit data inspect, on folders
    "cnnkit.data.decoded": "test_folder.py",  # decoding and caching, tried on folders the most
    "cnnkit.models.seed_cnn": "test_models.py",
    "cnnkit.models.registry": "test_models.py",
}


def tests_of(module: str) -> str | None:
    """The test file of ``module``: tests/test_<name>.py, its package's, or TESTED_IN's."""
    tests = SRC.parents[1] / "tests"
    parts = module.split(".")
    for name in (parts[-1], parts[-2] if len(parts) > 2 else ""):
        if name and (tests / f"test_{name}.py").is_file():
            return f"test_{name}.py"
    return TESTED_IN.get(module)


# Imports that run back up a layer, each with the reason (at most two; none today).
ALLOWED_UP: dict[tuple[str, str], str] = {}


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def layer_of(module: str) -> int | None:
    """The index of ``module``'s layer in LAYERS (the most specific pattern wins)."""
    best: tuple[int, int] | None = None
    for index, (_, _, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            base = pattern.rstrip("*")
            matches = module == base or (pattern.endswith("*") and module.startswith(base + "."))
            if matches and (best is None or len(pattern) > best[1]):
                best = (index, len(pattern))
    return None if best is None else best[0]


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, package: str, known: dict[str, Path]) -> None:
        self.module, self.package, self.known = module, package, known
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == (
            "TYPE_CHECKING"
        ):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parent = self.package
            for _ in range(node.level - 1):
                parent = parent.rpartition(".")[0]
            base = f"{parent}.{base}" if base else parent
        for alias in node.names:
            full = f"{base}.{alias.name}"
            self._add(full if full in self.known else base)

    def _add(self, name: str) -> None:
        while name and name not in self.known:
            name = name.rpartition(".")[0]
        if not name.startswith("cnnkit"):
            return
        self.found.add(name)
        # Importing a.b.c runs a/b/__init__.py first: an arrow to each package on the way
        # (but the root's, and those the importer is inside of, which are running already).
        parent = name.rpartition(".")[0]
        while parent and parent != "cnnkit":
            if not f"{self.module}.".startswith(f"{parent}."):
                self.found.add(parent)
            parent = parent.rpartition(".")[0]


# The only modules that import by name (importlib), each from a table _by_string reads.
BY_NAME = {"cnnkit", "cnnkit.cli", "cnnkit.models"}


def imports_by_name() -> list[tuple[str, int]]:
    """(module, line) of every call of importlib.import_module or __import__ in the package."""
    found = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                called = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
                if called in ("import_module", "__import__"):
                    found.append((name, node.lineno))
    return found


def _by_string() -> Iterator[tuple[str, str]]:
    """The imports made by name at run time (importlib), read from the tables that hold them."""
    import cnnkit
    from cnnkit import cli, models

    for target in cnnkit._LAZY.values():
        yield "cnnkit", target
    for verb in cli.VERBS:
        yield "cnnkit.cli", f"cnnkit.cli.{verb}"
    for module in models.BUILTIN:
        yield "cnnkit.models", f"cnnkit.models.{module}"


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str

    @property
    def up(self) -> bool:
        """Whether it runs from a lower layer to a higher one."""
        return (layer_of(self.target) or 0) > (layer_of(self.source) or 0)


def arrows() -> set[Arrow]:
    """Every import of one cnnkit module by another."""
    known = modules()
    found: set[Arrow] = set()
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        visitor = _Imports(name, package, known)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        found |= {Arrow(name, target) for target in visitor.found if target != name}
    found |= {Arrow(s, t) for s, t in _by_string() if t in known}
    return found


def cycles(edges: set[Arrow]) -> list[list[str]]:
    """The strongly connected groups of more than one module (import circles), Tarjan's way."""
    graph: dict[str, list[str]] = {}
    for arrow in sorted(edges, key=lambda a: (a.source, a.target)):
        graph.setdefault(arrow.source, []).append(arrow.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, []):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def module_map() -> list[tuple[str, str, str, int]]:
    """(layer, module, the first sentence of its docstring, lines) for every module, bottom up
    (:func:`tests_of` names each one's tests)."""
    rows = []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(text)) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        sentence = first.split(". ")[0].rstrip(".") + "." if first else ""
        layer = layer_of(name)
        rows.append((layer if layer is not None else -1, name, sentence, len(text.splitlines())))
    rows.sort()
    return [(LAYERS[layer][0] if layer >= 0 else "?", name, sentence, lines)
            for layer, name, sentence, lines in rows]  # fmt: skip
