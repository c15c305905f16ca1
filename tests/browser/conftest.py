"""The browser the tests of this package share (tests/browser/chromium.py); tests/scheduling.py runs its modules on
one worker so that each `pytest -n N` run launches it once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.chromium import SharedChromium

if TYPE_CHECKING:
    from playwright.sync_api import Browser


# Package scope, not session: Playwright's sync API marks the thread's asyncio loop as running between its calls,
# which would make `asyncio.run` fail in the tests that run after these on the same worker. The package's tests
# run one after the other, so this still launches once per worker.
@pytest.fixture(scope="package")
def shared_chromium() -> Iterator[SharedChromium]:
    chromium = SharedChromium()
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def browser(shared_chromium: SharedChromium) -> Browser:
    """The shared browser, connected: a test opens its own context (tests.browser.chromium.new_page)."""
    return shared_chromium.browser()
