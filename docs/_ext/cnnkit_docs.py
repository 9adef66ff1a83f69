"""The site's references, generated from the code at every build so that they cannot drift.

Directives (used in MyST pages as ```` ```{cnnkit-config} ```` and so on):

- ``cnnkit-config``: every configuration key: section, type, default and each preset's value,
  the values it allows, whether it may change on resume and be searched by ``cnnkit tune``,
  and what it means (:func:`cnnkit.config.describe_keys`, from the schema and its metadata).
- ``cnnkit-cli``: every verb and every flag, from the command's own argparse parsers.
- ``cnnkit-errors``: every one-line error cnnkit raises for bad input, read from the source.
- ``cnnkit-modules``: the code's modules, what each owns (its docstring's first sentence) and
  the layer it belongs to (tests/architecture.py, which the test suite enforces).

Each directive writes Markdown and has MyST parse it, so the generated pages look like the
written ones; every key, verb and module gets an anchor (``config.md#train-budget``,
``cli.md#cnnkit-tune``) that the guides and README link to.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src" / "cnnkit"
sys.path.insert(0, str(REPO / "tests"))  # architecture.py: the layers and the import graph


def _prose(text: Any) -> str:
    """A help text or description as Markdown: its `code` kept, a stray * not read as emphasis."""
    return str(text).replace("*", "\\*")


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _literal(text: str) -> str:
    """Text shown as written (a message): every character Markdown would read escaped."""
    return re.sub(r"([\\`*_\[\]<>#|~{}$])", r"\\\1", text)


def _code(text: Any) -> str:
    text = str(text)
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


class _Generated(Directive):
    """A directive whose content is Markdown made by :meth:`markdown`."""

    has_content = False

    def markdown(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        holder = nodes.section()
        holder.document = self.state.document
        lines = StringList(self.markdown(), source="(generated)")
        self.state.nested_parse(lines, 0, holder, match_titles=True)
        return list(holder.children)


# ----------------------------------------------------------------------------- configuration


class ConfigReference(_Generated):
    def markdown(self) -> list[str]:
        from cnnkit.config import describe_keys, list_presets
        from cnnkit.data import list_datasets
        from cnnkit.models import list_models

        presets = list_presets()
        # Two keys whose values are registries' names, not fixed choices of the schema.
        registries = {"data.name": list_datasets(), "model.name": list_models()}
        keys = [
            dataclasses.replace(k, allowed="one of " + ", ".join(f"`{n}`" for n in registries[k.key]))
            if k.key in registries else k
            for k in describe_keys()
        ]  # fmt: skip
        out = [
            "## Every key at a glance",
            "",
            "| key | default | allowed |",
            "| --- | --- | --- |",
        ]
        for k in keys:
            out.append(f"| [{_code(k.key)}](#{k.anchor}) | {_cell(_code(k.shown(k.default)))} "
                       f"| {_cell(k.allowed)} |")  # fmt: skip
        out.append("")
        section = None
        for k in keys:
            if k.section != section:
                section = k.section
                out += [f"## {section or 'top level'}", "", k.section_doc, ""]
            out += [f"({k.key})=", f"### {_code(k.key)}", "", k.doc, ""]
            facts = [f"{k.type}", f"default {_code(k.shown(k.default))}"]
            differs = [
                f"{_code(p)}: {_code(k.shown(k.presets[p]))}"
                for p in presets
                if k.presets[p] != k.default
            ]
            if differs:
                facts.append("in presets " + ", ".join(differs))
            facts.append(f"allowed: {k.allowed}")
            facts.append(f"on resume: {k.resume_text}")
            facts.append(
                "searchable by `cnnkit tune`" if k.searchable else "not searchable by `cnnkit tune`"
            )
            out += [" · ".join(facts), ""]
        return out


# ----------------------------------------------------------------------------- command line


def _flag_row(action: argparse.Action) -> str | None:
    if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
        return None
    if action.option_strings:
        names = ", ".join(_code(o) for o in action.option_strings)
    else:
        names = _code(action.metavar or action.dest)
    if action.nargs == 0:
        value = ""
    elif action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        value = " \\| ".join(_code(c) for c in action.choices)
    else:
        metavar = action.metavar or action.dest.upper()
        value = _code(metavar if isinstance(metavar, str) else " ".join(metavar))
        if action.nargs in ("*", "+"):
            value += " ..."
    default = action.default
    shown = (
        "" if default in (None, False, argparse.SUPPRESS) or action.nargs == 0 else _code(default)
    )
    if isinstance(default, list) and not default:
        shown = ""
    help_text = (action.help or "").replace("%(default)s", str(default))
    return f"| {names} | {value} | {shown} | {_cell(_prose(help_text))} |"


def _parser_markdown(name: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    anchor = name.replace(" ", "-")
    out = [f"({anchor})=", f"{'#' * level} `{name}`", ""]
    if parser.description:
        out += [_prose(parser.description), ""]
    # argparse's own usage line, wrapped to the page's width.
    formatter = argparse.HelpFormatter(parser.prog, width=88)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, "")
    out += ["```text", formatter.format_help().strip(), "```", ""]
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    rows = [r for a in parser._actions
            if not isinstance(a, argparse._SubParsersAction) and (r := _flag_row(a))]  # fmt: skip
    if rows:
        out += ["| argument | value | default | what it does |", "| --- | --- | --- | --- |",
                *rows, ""]  # fmt: skip
    if parser.epilog:
        out += [_prose(parser.epilog), ""]
    for action in subparsers:
        for sub_name, sub in action.choices.items():
            out += _parser_markdown(f"{name} {sub_name}", sub, level + 1)
    return out


class CliReference(_Generated):
    def markdown(self) -> list[str]:
        from cnnkit.cli import build_parser

        parser = build_parser()
        out = _parser_markdown("cnnkit", parser, 2)
        return out


# ----------------------------------------------------------------------------- errors


# The exceptions that reach a user as one line (``cnnkit: error: ...``, exit status 2).
USER_ERRORS = ("CnnkitError", "ConfigError", "DataError", "RunError", "ImageError",
               "ExportError", "ExplainError", "PixelLimitError", "TrainingDiverged")  # fmt: skip


def _message(node: ast.expr) -> str | None:
    """The text of a message expression, with what is filled in at run time as ``…``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                call = getattr(value, "value", None)
                name = getattr(getattr(call, "func", None), "id", "")
                parts.append("; did you mean …?" if name == "did_you_mean" else "…")
        return "".join(parts)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _message(node.left), _message(node.right)
        return None if left is None or right is None else left + right
    return None


def user_errors() -> list[tuple[str, str, str]]:
    """(module, exception, message) for every ``raise`` of a user's error in the source, and
    every ``parser.error(...)`` of the command line, in source order."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            call = None
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                call = node.exc
                kind = getattr(call.func, "id", getattr(call.func, "attr", ""))
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", "") == "error"
                and getattr(getattr(node.func, "value", None), "id", "") == "parser"
            ):
                call, kind = node, "usage"
            if call is None or (kind != "usage" and kind not in USER_ERRORS) or not call.args:
                continue
            text = _message(call.args[0])
            if text:
                found.append((getattr(node, "lineno", 0), module, kind, " ".join(text.split())))
    found.sort(key=lambda row: (row[1], row[0]))
    return [(module, kind, text) for _, module, kind, text in found]


class ErrorsReference(_Generated):
    def markdown(self) -> list[str]:
        out: list[str] = []
        where = None
        for module, kind, text in user_errors():
            if module != where:
                where = module
                out += ["", f"## `{module}`", "", "| error | message |", "| --- | --- |"]
            out.append(f"| `{kind}` | {_literal(text)} |")
        return out


# ----------------------------------------------------------------------------- modules


class ModulesReference(_Generated):
    def markdown(self) -> list[str]:
        from architecture import LAYERS, module_map, tests_of

        out = ["| layer | what its modules are |", "| --- | --- |"]
        out += [f"| {name} | {_cell(what)} |" for name, what, _ in reversed(LAYERS)]
        out += ["", "| layer | module | what it owns | lines | its tests |",
                "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for layer, module, summary, lines in reversed(module_map()):
            tests = tests_of(module) or ("test_cli.py" if module.startswith("cnnkit.cli") else "")
            out.append(f"| {layer} | `{module}` | {_cell(summary)} | {lines} | `{tests}` |")
        return out


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("cnnkit-config", ConfigReference)
    app.add_directive("cnnkit-cli", CliReference)
    app.add_directive("cnnkit-errors", ErrorsReference)
    app.add_directive("cnnkit-modules", ModulesReference)
    return {"parallel_read_safe": True, "version": "1"}
