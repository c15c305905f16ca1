"""A browser page on a real `python -m app`: the setup the dashboard's card tests share.

The service runs on a data directory a test seeded (no embedded worker, no bootstrap job, and whatever settings the
test adds); the page is the shared headless Chromium's (a context of its own) at the service's root, with its script
errors collected for the test to assert on at the end.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.app.factories import free_port
from tests.app.servers import running, server_env, wait_until_ready
from tests.browser.chromium import new_page

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@dataclass
class ServicePage:
    page: Any
    client: httpx.Client
    base_url: str
    script_errors: list[str] = field(default_factory=list)


@contextlib.contextmanager
def service_page(
    browser: Browser,
    data_dir: Path,
    log_path: Path,
    *,
    height: int = 1800,
    accept_downloads: bool = False,
    **settings: str,
) -> Iterator[ServicePage]:
    """The service on `data_dir` with `settings`, and a page of `browser` opened at its root once it is ready."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = server_env(data_dir, PORT=str(port), EMBEDDED_WORKER="false", BOOTSTRAP_JOB="false", **settings)
    with (
        running([sys.executable, "-m", "app"], env, log_path) as process,
        httpx.Client(base_url=base_url) as client,
    ):
        wait_until_ready(base_url, process, log_path)
        # The page closes before the service stops: it polls the service while it is open.
        with new_page(browser, viewport={"width": 1280, "height": height}, accept_downloads=accept_downloads) as page:
            view = ServicePage(page, client, base_url)
            page.on("pageerror", lambda error: view.script_errors.append(str(error)))
            page.goto(base_url)
            yield view
