"""A real browser for tests: Debian's chromium driven by Playwright (sync API).

Playwright's own browser download does not work offline, so the system chromium is
launched instead (``make test`` installs it with apt-get when it is missing)::

    from browser_support import launch_browser, open_page

    def test_page(tmp_path):
        with launch_browser() as browser:
            page, log = open_page(browser, "file:///.../report.html", width=390)
            assert log.console_errors == []

A test skips only when chromium is truly missing (:func:`require_chromium`); a missing
``playwright`` package is an error, since it is a dev dependency.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# D2V_CHROMIUM overrides the executable (e.g. another distribution's path)
CHROMIUM = os.environ.get("D2V_CHROMIUM", "/usr/bin/chromium")
# offline and quiet: no GPU, no QUIC, no background fetches, updates or sync
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str | None:
    """The chromium executable, or None when it is not installed."""
    if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


def require_chromium() -> str:
    """The chromium executable; skips the calling test only if chromium is not installed."""
    path = chromium_path()
    if path is None:
        pytest.skip(
            f"chromium not found at {CHROMIUM} or on PATH: `make test` installs it "
            "(apt-get install chromium); or set D2V_CHROMIUM"
        )
    return path


@contextmanager
def launch_browser() -> Iterator[Any]:
    """A headless Playwright ``Browser`` on the system chromium, closed on exit."""
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=list(CHROMIUM_ARGS), timeout=60_000
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    """What a page did while loading: console errors, uncaught errors, requested URLs."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)


def open_page(browser: Any, url: str, width: int, height: int = 900) -> tuple[Any, PageLog]:
    """Open ``url`` in a fresh page of ``width`` x ``height`` CSS pixels (device scale 1),
    recording console errors, page errors and every request (data: URIs included when the
    browser reports them). Returns the page (closed with the browser) and its log."""
    page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
    log = PageLog()
    page.on("console", lambda m: log.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log.page_errors.append(str(e)))
    page.on("request", lambda r: log.requests.append(r.url))
    page.on("requestfailed", lambda r: log.failed_requests.append(r.url))
    page.goto(url, wait_until="load")
    return page, log
