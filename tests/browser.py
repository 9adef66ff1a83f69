"""Open a page in headless Chromium (Debian's package, driven by Playwright) and say what a
person would have seen go wrong: console errors, script errors, failed loads, broken images."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Screenshots kept for a person to look at (CI keeps the folder as an artifact).
ARTIFACTS = Path(os.environ.get("CNNKIT_TEST_ARTIFACTS", REPO / "test-artifacts"))
# Without these Chromium tries to reach Google's hosts at start, which a closed network refuses.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    found = os.environ.get("CNNKIT_CHROMIUM") or shutil.which("chromium")
    if not found:
        raise RuntimeError(
            "the report tests open pages in Debian's chromium: `apt-get install chromium` "
            "(make test does it when run as root), or set CNNKIT_CHROMIUM to a Chromium binary"
        )
    return found


@dataclass
class PageCheck:
    title: str
    problems: list[str]  # console errors, page errors, failed requests, images that did not load
    images: int  # <img> elements, all loaded when problems is empty
    text: str  # the page's visible text


def open_page(page_file: Path, screenshot: str | None = None) -> PageCheck:
    """Load ``page_file`` offline; with ``screenshot``, save ARTIFACTS/<screenshot> (full page)."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url[:80]}"))
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])"
            )
            problems += [f"image not loaded: {alt}" for alt, ok in images if not ok]
            if screenshot:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
            return PageCheck(page.title(), problems, len(images), page.inner_text("body"))
        finally:
            browser.close()
