"""A PNG of a page as headless Chromium draws it: ``report.html`` or a TensorBoard dashboard.

    python tools/screenshot.py runs/demo/report.html docs/figures/report.png [--height 1400]
    python tools/screenshot.py http://localhost:6006/#timeseries docs/figures/tensorboard.png

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` package, which
drives it (no browser download). The page is drawn at 1200 px wide and cut at ``--height``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

# flags for a machine without network access: no background connections to time out
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("page", help="a file (report.html) or a URL")
    parser.add_argument("png", type=Path)
    parser.add_argument("--height", type=int, default=1400)
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to let a page draw")
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs Chromium: apt-get install chromium")
    url = args.page if "://" in args.page else Path(args.page).resolve().as_uri()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": args.height})
        page.goto(url, wait_until="networkidle")
        page.wait_for_timeout(args.wait * 1000)
        page.screenshot(path=str(args.png))
        browser.close()
    print(args.png)


if __name__ == "__main__":
    main()
