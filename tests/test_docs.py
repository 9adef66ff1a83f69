"""The documentation site builds (Sphinx, warnings as errors), its generated references are
complete (every config key with its range, every flag of every verb, every public function),
its pages open in a browser without an error, and README, the front door, stays short and every
link in it resolves, in the repository and on the built site."""

from __future__ import annotations

import argparse
import html
import inspect
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import yaml

import cnnkit
from conftest import REPO, cli

README = REPO / "README.md"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / ".doctrees"), str(REPO / "docs"), str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return out


def text_of(page: Path) -> str:
    """A built page's visible text, one space between words."""
    body = page.read_text(encoding="utf-8")
    body = re.sub(r"<(script|style)\b.*?</\1>", " ", body, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


def ids_of(page: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8")))


# ----------------------------------------------------------------------------- the references


@pytest.mark.slow
def test_config_page_lists_every_key_with_its_range(site: Path) -> None:
    from cnnkit.config import describe_keys, flatten

    page = site / "reference" / "config.html"
    ids = ids_of(page)
    text = re.sub(r"\s", "", text_of(page))  # inline code is set apart by tags, not spaces
    printed = flatten(yaml.safe_load(cli("config").stdout))  # what `cnnkit config` prints
    keys = {info.key: info for info in describe_keys()}
    assert set(printed) <= set(keys), set(printed) - set(keys)
    for key, info in keys.items():
        assert info.anchor in ids, f"{key} has no entry"
        allowed = re.sub(r"[`\s]", "", info.allowed)
        if not key.endswith(".name"):  # data.name and model.name: the registries' names
            assert allowed in text, (
                f"{key}: its allowed values {info.allowed!r} are not on the page"
            )
        meaning = re.sub(r"[`\s]", "", info.doc.split(". ")[0])
        assert meaning in text, f"{key}: its meaning is missing"
    # The values a preset gives, and the rules, are on the page too.
    assert "fast:1024" in text and "maynotchange(thecheckpointdependsonit)" in text


@pytest.mark.slow
def test_cli_page_lists_every_flag_of_every_verb(site: Path) -> None:
    from cnnkit.cli import VERBS, build_parser

    page = site / "reference" / "cli.html"
    ids, text = ids_of(page), text_of(page)

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        assert name.replace(" ", "-") in ids, f"{name} has no entry"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    walk(f"{name} {sub}", subparser)
            elif action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction):
                for flag in action.option_strings or [action.metavar or action.dest]:
                    assert str(flag) in text, f"{name}: {flag} is not on the page"

    walk("cnnkit", build_parser())
    assert all(f"cnnkit-{verb}" in ids for verb in VERBS)


@pytest.mark.slow
def test_api_reference_names_every_public_function(site: Path) -> None:
    page = (site / "reference" / "api.html").read_text(encoding="utf-8")
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


@pytest.mark.slow
def test_errors_page_holds_the_messages_of_the_source(site: Path) -> None:
    text = text_of(site / "reference" / "errors.html")
    # A few messages from different parts, as the source writes them.
    for message in ("unknown config key …; did you mean …?",
                    "pass the run folder that `cnnkit train` printed",
                    "--min-confidence must be a probability between 0 and 1"):  # fmt: skip
        assert message in text, message


def test_run_folder_page_names_every_file_of_a_run() -> None:
    from cnnkit import runs

    page = (REPO / "docs" / "reference" / "run-folder.md").read_text(encoding="utf-8")
    names = [value for key, value in vars(runs).items()
             if key.endswith(("_FILE", "_JSON")) and isinstance(value, str)]  # fmt: skip
    names += list(runs.EXPORT_FORMATS.values())
    missing = [name for name in names if name not in page and name != runs.LOCK_FILE]
    assert not missing, f"docs/reference/run-folder.md does not mention {missing}"


# ----------------------------------------------------------------------------- in a browser


@pytest.mark.slow
@pytest.mark.parametrize("page", ["index.html", "guides/getting-started.html"])
def test_pages_open_in_a_browser_without_errors(site: Path, page: str) -> None:
    from browser import open_page

    check = open_page(site / page, screenshot=f"site-{page.replace('/', '-')}.png")
    assert not check.problems, check.problems
    assert "cnnkit" in check.title


# ----------------------------------------------------------------------------- README


def test_readme_is_a_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300, f"README.md has {len(text.splitlines())} lines"
    assert len(text.encode()) <= 16 * 1024, f"README.md has {len(text.encode()):,} bytes"


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_\[\]()]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def readme_links() -> list[str]:
    text = README.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # commands are not links
    return re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'src="([^"]+)"', text)


def test_readme_links_resolve_in_the_repository() -> None:
    text = README.read_text(encoding="utf-8")
    own = {_slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    broken = []
    for link in readme_links():
        parsed = urlparse(link)
        if parsed.scheme in ("http", "https", "mailto"):
            continue
        target = REPO / unquote(parsed.path) if parsed.path else README
        missing_anchor = not parsed.path and parsed.fragment not in own
        if not target.exists() or missing_anchor:
            broken.append(link)
    assert not broken, f"README links that resolve to nothing: {broken}"
    assert any(link.startswith("docs/") for link in readme_links())


@pytest.mark.slow
def test_readme_links_into_the_docs_resolve_on_the_built_site(site: Path) -> None:
    broken = []
    for link in readme_links():
        parsed = urlparse(link)
        path = unquote(parsed.path)
        if not path.startswith("docs/") or not path.endswith((".md", ".rst")):
            continue
        built = site / Path(path).relative_to("docs").with_suffix(".html")
        if not built.is_file():
            broken.append(f"{link} (no page {built.relative_to(site)})")
        elif parsed.fragment and parsed.fragment not in ids_of(built):
            broken.append(f"{link} (no anchor #{parsed.fragment} on the page)")
    assert not broken, f"README links that the site does not have: {broken}"
