"""The viewer's pages in a real browser (Debian's Chromium through Playwright), on run folders the
tests write with the record dataclasses. Every test here is marked `browser`; none is skipped: a
missing Chromium fails them (bash .ci/install installs it)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.browser import Watched, chromium, watched_page

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.browser)


# Per module, not per session: Playwright's sync API keeps an event loop running in this thread
# while it is open, and the tests after these run event loops of their own.
@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser) -> Iterator[Watched]:
    watched = watched_page(browser)
    yield watched
    watched.page.close()
