"""Debian's Chromium driven through Playwright's Python API (never a downloaded browser build), for
the viewer's tests and `benchmarks.viewer_scale`: a page that records console errors, uncaught
exceptions, dialogs and every request that would leave the file."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
]  # fmt: skip
# Screenshots of each page kind, kept for a person to look at (git-ignored).
SCREENSHOTS = Path(__file__).resolve().parents[1] / "tests" / "output" / "viewer"


@dataclass
class Watched:
    page: Page
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def open(self, path: Path, route: str = "") -> None:
        self.page.goto(path.resolve().as_uri() + (f"#{route}" if route else ""))
        self.drawn()

    def drawn(self) -> None:
        """Wait until a page is drawn (a problem page first unpacks its run's traces)."""
        self.page.wait_for_selector("#main > div")

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@contextmanager
def chromium() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium (bash .ci/install does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def watched_page(browser: Browser) -> Watched:
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.set_default_timeout(10_000)  # a page that never renders fails in seconds, not minutes
    watched = Watched(page)
    page.on("console", lambda m: watched.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: watched.errors.append(str(e)))
    page.on("dialog", lambda d: (watched.dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else watched.requests.append(r.url))
    return watched
