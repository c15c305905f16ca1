"""The API docs work offline: /docs (Swagger UI) and /redoc render this API's operations in headless Chromium with
every request to another host aborted, as on an air-gapped machine. Their assets are vendored in
app/static/vendor and served by the app (app/routes/api_docs.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from tests.app.factories import free_port
from tests.app.servers import running, server_env, wait_until_ready
from tests.browser.chromium import new_page

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path = tmp_path_factory.mktemp("api-docs")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = server_env(
        tmp_path / "data", PORT=str(port), HOST="127.0.0.1", EMBEDDED_WORKER="false", BOOTSTRAP_JOB="false"
    )
    log_path = tmp_path / "service.log"
    with running([sys.executable, "-m", "app"], env, log_path) as process:
        wait_until_ready(url, process, log_path, path="/healthz")
        yield url


def _block_other_hosts(page: Page, blocked: list[str]) -> None:
    """Abort (and record) the page's requests to any host but 127.0.0.1."""

    def only_loopback(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1" or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    page.route("**/*", only_loopback)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "operation"),
    [
        # Swagger UI: one block per operation, its method and path.
        ("/docs", '.opblock-post .opblock-summary-path[data-path="/act"]'),
        # ReDoc: the operation's section in the middle panel, by its operationId.
        ("/redoc", '[data-section-id^="operation/"][data-section-id$="_act_post"]'),
    ],
)
def test_docs_render_without_internet(browser: Browser, base_url: str, path: str, operation: str) -> None:
    blocked: list[str] = []
    script_errors: list[str] = []
    failed: list[str] = []
    with new_page(browser, viewport={"width": 1280, "height": 1000}) as page:
        _block_other_hosts(page, blocked)
        page.on("pageerror", lambda e: script_errors.append(str(e)))
        # The page's Content-Security-Policy stops the one URL ReDoc's bundle names (a decorative logo on
        # Redocly's CDN) inside the browser: it fails without reaching the network, so the route never sees it.
        page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith(base_url) else None)
        page.goto(base_url + path)
        page.locator(operation).first.wait_for()
        page.get_by_text("DDPG policy service").first.wait_for()
        favicon = page.locator('link[rel="shortcut icon"]').get_attribute("href")
        assert favicon is not None and favicon.startswith("/static/vendor/")
        assert blocked == [], blocked
        assert failed == [], failed
        assert script_errors == []
