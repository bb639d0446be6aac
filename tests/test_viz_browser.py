"""The Kedro-Viz map in a real browser: `kedro viz build` of the project, served on
127.0.0.1, opened at 1400 x 900 in headless chromium (tests/browser_support.py).

At the initial fit-to-screen zoom the default map must show the three modality lanes and
the stage's node names legibly, with no page errors and nothing fetched from the internet
except the web font Kedro-Viz always asks Google for (blocked here; the map works without
it). A screenshot of that map lands in the test's folder, and in $D2V_SCREENSHOTS when set
(``D2V_SCREENSHOTS=docs/screenshots pytest tests/test_viz_browser.py`` refreshes
docs/screenshots/kedro_viz.png).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_support import PageLog, launch_browser

MODALITIES = ("image", "speech", "text")
WIDTH, HEIGHT = 1400, 900
MIN_TEXT_PX = 8  # a label shorter than this is not readable on a screenshot
GOOGLE_FONTS = "fonts.googleapis.com"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def viz_url(tmp_path_factory, make_project, kedro_cli) -> Iterator[str]:
    """`kedro viz build` of a project copy, served over HTTP on 127.0.0.1 (a free port)."""
    project = make_project(tmp_path_factory.mktemp("viz") / "project")
    kedro_cli(project, "viz", "build")
    handler = functools.partial(_QuietHandler, directory=str(project / "build"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _open_map(browser, url: str, hide_hints: bool = False):
    """The default map at WIDTH x HEIGHT, Google's font blocked; (page, log)."""
    context = browser.new_context(
        viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=1
    )
    if hide_hints:  # the "new feature" tour a first visit shows over the map
        context.add_init_script(
            "localStorage.setItem('KedroViz', JSON.stringify({showFeatureHints: false}))"
        )
    page = context.new_page()
    log = PageLog()
    page.on("pageerror", lambda e: log.page_errors.append(str(e)))
    page.on("request", lambda r: log.requests.append(r.url))
    page.route(f"**://{GOOGLE_FONTS}/**", lambda route: route.abort())
    page.goto(url, wait_until="networkidle")
    page.wait_for_selector("g.pipeline-node--modularPipeline text", timeout=60_000)
    page.wait_for_timeout(1500)  # the zoom-to-fit transition
    return page, log


def _label_heights(page, selector: str) -> dict[str, float]:
    """Rendered text -> height in screen pixels of the labels matched by ``selector``."""
    return page.eval_on_selector_all(
        selector,
        "els => Object.fromEntries(els.map(e => [e.textContent.trim(),"
        " e.getBoundingClientRect().height]))",
    )


def test_default_map_shows_the_lanes_and_stage_legibly_offline(viz_url, tmp_path):
    with launch_browser() as browser:
        page, log = _open_map(browser, viz_url)
        lanes = _label_heights(page, "g.pipeline-node--modularPipeline text")
        tasks = _label_heights(page, "g.pipeline-node--task text")
        datasets = _label_heights(page, "g.pipeline-node--data text")
        bands = page.eval_on_selector_all(
            ".pipeline-layer-name", "els => els.map(e => e.textContent.trim())"
        )
        assert log.page_errors == []
        external = [u for u in log.requests if not u.startswith((viz_url, "data:", "blob:"))]
        assert [u for u in external if GOOGLE_FONTS not in u] == []

        page2, _ = _open_map(browser, viz_url, hide_hints=True)
        shot = tmp_path / "kedro_viz.png"
        page2.screenshot(path=str(shot))

    # the three lanes, collapsed as Kedro-Viz shows namespaces by default, readable at fit
    assert set(lanes) == set(MODALITIES)
    assert {m: h for m, h in lanes.items() if h < MIN_TEXT_PX} == {}
    # the stage joining the lanes: its nodes are named and readable too
    assert {"report.gather_inputs", "report.summarise", "report.render_html"} <= set(tasks)
    assert {n: h for n, h in {**tasks, **datasets}.items() if h < MIN_TEXT_PX} == {}
    assert {"report_html", "label_efficiency"} <= set(datasets)
    assert "reporting" in bands
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if target := os.environ.get("D2V_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(target) / "kedro_viz.png")
