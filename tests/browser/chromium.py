"""One headless Chromium (and one Playwright driver) for all the browser tests of a pytest worker, a fresh browser
context per test.

Launching Chromium and Playwright's driver costs ~1.35 CPU s of child processes each time; a browser context is
what isolates tests (its own cookies, storage, downloads, viewport), and opening one costs a few milliseconds. If a
test leaves the browser disconnected (it crashed, or was closed), the next test launches a new one.

Uses the system Chromium (/usr/bin/chromium, Debian's `chromium` package; .ci/run installs it) through Playwright
for Python. Without them a browser test fails with the reason: it never passes silently.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A bound on each step's waiting (milliseconds), not a timing assertion.
STEP_DEADLINE_MS = 30_000
# How often a page re-evaluates a `wait_for_function` condition (milliseconds). Playwright's default re-evaluates it
# on every animation frame, which keeps the renderer drawing ~60 frames a second for as long as the wait lasts.
POLL_MS = 100


def _sync_playwright() -> Any:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]'")
    return sync_playwright


class SharedChromium:
    """A Playwright driver and a Chromium, started on first use and again whenever the browser is gone."""

    def __init__(self) -> None:
        self._manager: Any = None
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None

    def browser(self) -> Browser:
        """The running browser, launched if there is none or the last one is no longer connected."""
        if self._browser is not None and self._browser.is_connected():
            return self._browser
        if self._playwright is not None:
            try:
                self._browser = self._launch(self._playwright)
                return self._browser
            except Exception:  # the driver went with the browser: start both again
                self.close()
        self._manager = _sync_playwright()()
        self._playwright = self._manager.start()
        self._browser = self._launch(self._playwright)
        return self._browser

    @staticmethod
    def _launch(playwright: Playwright) -> Browser:
        return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)

    def close(self) -> None:
        """Close the browser and stop the driver, whatever state a failed test left them in."""
        browser, manager = self._browser, self._manager
        self._browser, self._playwright, self._manager = None, None, None
        try:
            if browser is not None and browser.is_connected():
                browser.close()
        finally:
            if manager is not None:
                manager.__exit__(None, None, None)


@contextlib.contextmanager
def new_page(browser: Browser, **context_options: Any) -> Iterator[Page]:
    """A page in a browser context of its own (`context_options`: viewport, accept_downloads...), closed after."""
    context = browser.new_context(**context_options)
    try:
        page = context.new_page()
        page.set_default_timeout(STEP_DEADLINE_MS)
        yield page
    finally:
        # Closing the context closes its pages: none is left polling the service after its test. A browser that
        # crashed took its contexts with it.
        if browser.is_connected():
            context.close()
