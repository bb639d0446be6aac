"""The smoke report opened in a real browser (Debian's chromium through Playwright) at a
desktop width (1400 px) and a phone width (390 px): it loads nothing from the network,
logs no errors, never scrolls sideways on a phone, its in-page links resolve, each figure
opens at full size inside the page, it opens with the run header and the headline table,
and no verdict stands next to a zero-width interval.

Set ``D2V_SCREENSHOTS=<folder>`` to save screenshots there: the top of the page and the
summary at both widths (``report_<width>_top.png``, ``report_<width>_summary.png``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from browser_support import launch_browser, open_page

WIDTHS = (1400, 390)
VERDICT_WORDS = re.compile(r"\b(better|worse|wins?|loss(es)?|beats?|loses)\b", re.I)
INTERVAL = re.compile(r"(-?\d+(?:\.\d+)?) to (-?\d+(?:\.\d+)?)")

# every table row, and every sentence clause (split at ';') of paragraphs and list items,
# with the text of collapsed <details> included (textContent)
TEXT_UNITS_JS = """() => {
  const rows = [...document.querySelectorAll('tr')].map(r => r.textContent);
  const clauses = [...document.querySelectorAll('p, li')]
    .flatMap(e => e.textContent.split(';'));
  return rows.concat(clauses);
}"""
BROKEN_ANCHORS_JS = """() => [...document.querySelectorAll('a[href^="#"]')]
  .map(a => a.getAttribute('href').slice(1))
  .filter(id => !document.getElementById(decodeURIComponent(id)))"""
# for each figure image: the in-page link around it, and whether its target holds that image
FIGURE_LINKS_JS = """() => [...document.querySelectorAll('figure img')].map(img => {
  const a = img.closest('a[href^="#"]');
  const target = a && document.getElementById(a.getAttribute('href').slice(1));
  return {src: img.src.slice(0, 40), linked: !!a,
          full: !!target && [...target.querySelectorAll('img')].some(i => i.src === img.src)};
})"""


@pytest.fixture(scope="module")
def pages(smoke_report):
    """Per width: (page, its log); the browser stays open for the module's tests."""
    report = smoke_report / "08_reporting" / "report.html"
    url = report.resolve().as_uri()
    with launch_browser() as browser:
        opened = {w: open_page(browser, url, width=w) for w in WIDTHS}
        if folder := os.environ.get("D2V_SCREENSHOTS"):
            for w, (page, _) in opened.items():
                page.screenshot(path=str(Path(folder) / f"report_{w}_top.png"))
                page.evaluate("document.getElementById('summary').scrollIntoView()")
                page.screenshot(path=str(Path(folder) / f"report_{w}_summary.png"))
                page.evaluate("window.scrollTo(0, 0)")
        yield url, opened


def test_loads_nothing_but_itself_and_logs_no_error(pages):
    url, opened = pages
    for width, (_, log) in opened.items():
        assert log.console_errors == [] and log.page_errors == [], width
        assert log.failed_requests == [], width
        assert [r for r in log.requests if r != url and not r.startswith("data:")] == []


def test_a_phone_never_scrolls_sideways(pages):
    page, _ = pages[1][390]
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert scroll <= inner
    # wide tables scroll inside their own container instead
    wraps = page.evaluate(
        "[...document.querySelectorAll('table')].map(t => t.parentElement.className)"
    )
    assert wraps and set(wraps) == {"table-wrap"}
    # the same with every collapsed block open (appendix tables, data summaries)
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = false)")
    assert scroll <= inner


def test_in_page_links_resolve_and_figures_open_full_size(pages):
    page, _ = pages[1][390]
    assert page.evaluate(BROKEN_ANCHORS_JS) == []
    figures = page.evaluate(FIGURE_LINKS_JS)
    assert len(figures) > 10
    assert all(f["linked"] and f["full"] for f in figures), figures
    # open one: the figure becomes a full-screen overlay with the image at its natural size
    page.click("figure a.zoom >> nth=0")
    shown = page.evaluate(
        """() => { const f = document.querySelector('figure:target'), i = f.querySelector('img');
        return [getComputedStyle(f).position, i.clientWidth, i.naturalWidth,
                document.documentElement.scrollWidth <= window.innerWidth]; }"""
    )
    assert shown[0] == "fixed" and shown[1] == shown[2] > 390 and shown[3]
    page.click("figure:target a.close")
    assert page.evaluate("document.querySelector('figure:target')") is None


def test_opens_with_the_run_header_and_the_headline_table(pages):
    page, _ = pages[1][1400]
    title = page.title()
    assert title.startswith("data2vec vs baselines — images, speech, text — SMOKE RUN")
    captions = page.evaluate("[...document.querySelectorAll('caption')].map(c => c.textContent)")
    assert captions[:2] == ["This run", "Test accuracy (%) at 10% labels"]
    header = page.inner_text("table >> nth=0")
    assert "run --env smoke" in header and "clean tree at the start" in header
    assert page.is_visible(".callout.banner")
    assert "D 128" not in page.content()  # sizes as run: the smoke encoders are D 32


def test_no_verdict_next_to_a_zero_width_interval(pages):
    page, _ = pages[1][1400]
    units = page.evaluate(TEXT_UNITS_JS)
    zero_width = [u for u in units if any(a == b for a, b in INTERVAL.findall(u))]
    assert [u for u in zero_width if VERDICT_WORDS.search(u)] == []
