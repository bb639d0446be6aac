"""Screenshots of a built report for the README (run after `make run`):

    python docs/screenshots/take.py [data/08_reporting/report.html]

Writes docs/screenshots/report_{1400,390}_{top,summary}.png with Debian's chromium driven by
Playwright (the launcher the browser tests use: tests/browser_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from browser_support import launch_browser, open_page  # noqa: E402


def main(report: str = "data/08_reporting/report.html") -> None:
    url = (ROOT / report).resolve().as_uri()
    out = Path(__file__).parent
    with launch_browser() as browser:
        for width in (1400, 390):
            page, log = open_page(browser, url, width)
            if log.console_errors or log.page_errors:
                raise SystemExit(f"{report} at {width} px: {log.console_errors + log.page_errors}")
            page.screenshot(path=str(out / f"report_{width}_top.png"))
            page.evaluate("document.getElementById('summary').scrollIntoView()")
            page.screenshot(path=str(out / f"report_{width}_summary.png"))
            print(f"wrote {out}/report_{width}_{{top,summary}}.png")


if __name__ == "__main__":
    main(*sys.argv[1:])
