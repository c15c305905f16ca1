"""One headless Chromium (and one Playwright driver) for all the browser tests of a pytest worker, a fresh browser
context per test.

Launching Chromium and Playwright's driver costs ~1.35 CPU s of child processes each time; a browser context is
what isolates tests (its own cookies, storage, downloads, viewport), and opening one costs a few milliseconds. If a
test leaves the browser or the driver gone (crashed, killed or closed), the next test starts both again.

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
    """A Playwright driver and a Chromium, started on first use and again whenever either is gone."""

    def __init__(self) -> None:
        self._manager: Any = None
        self._browser: Browser | None = None

    def browser(self) -> Browser:
        """The running browser; a new driver and browser if a test left them disconnected."""
        if self._browser is not None and _responds(self._browser):
            return self._browser
        self.close()
        self._manager = _sync_playwright()()
        playwright: Playwright = self._manager.start()
        self._browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        return self._browser

    def close(self) -> None:
        """Close the browser and stop the driver, whatever state a failed test left them in."""
        browser, manager = self._browser, self._manager
        self._browser, self._manager = None, None
        try:
            if browser is not None and browser.is_connected():
                browser.close()
        except Exception:  # the driver is gone, and Chromium (on its pipe) with it
            pass
        finally:
            if manager is not None:
                manager.__exit__(None, None, None)


def _responds(browser: Browser) -> bool:
    """Whether the browser is connected and its driver answers (a driver that died leaves it "connected")."""
    if not browser.is_connected():
        return False
    try:
        browser.new_context().close()
    except Exception:
        return False
    return True


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
