"""The dashboard's files: served at / and /static, self-contained (no other hosts), and packaged."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from tests.app.conftest import Api

STATIC = Path(__file__).resolve().parents[2] / "app" / "static"
PYPROJECT = STATIC.parents[1] / "pyproject.toml"


def test_the_page_and_its_assets_are_served(api: Api) -> None:
    page = api.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<title>DDPG policy service</title>" in page.text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        response = api.client.get(asset)
        assert response.status_code == 200, asset
    chart = api.client.get("/static/vendor/chart.umd.js")
    assert chart.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "Chart.js v4" in chart.text[:200]
    assert api.client.get("/static/vendor/chart.js.LICENSE.md").status_code == 200
    assert api.client.get("/static/../main.py").status_code == 404
    assert "/" not in api.client.get("/openapi.json").json()["paths"]


def test_the_api_docs_load_only_vendored_assets(api: Api) -> None:
    # /docs and /redoc are the app's own pages (FastAPI's would load Swagger UI and ReDoc from a CDN).
    for path in ("/docs", "/redoc"):
        page = api.client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert urls and all(url.startswith("/static/vendor/") for url in urls), urls
        for url in urls:
            assert api.client.get(url).status_code == 200, url
    assert "fonts.googleapis" not in api.client.get("/redoc").text
    assert api.client.get("/docs/oauth2-redirect").status_code == 200
    assert not {"/docs", "/redoc"} & set(api.client.get("/openapi.json").json()["paths"])


def test_nothing_is_loaded_from_another_host() -> None:
    for name in (
        "index.html",
        "app.js",
        "catalog.js",
        "curve.js",
        "models.js",
        "style.css",
        "sweeps.html",
        "sweeps.js",
    ):
        text = (STATIC / name).read_text()
        assert not re.search(r"(?:src|href)=\"(?:https?:)?//", text), name
        assert 'fetch("http' not in text and "import(" not in text, name


def test_every_static_file_is_packaged() -> None:
    patterns = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]["app"]
    for path in STATIC.rglob("*"):
        if path.is_file():
            relative = path.relative_to(STATIC.parent).as_posix()
            assert any(fnmatch.fnmatch(relative, p) and relative.count("/") == p.count("/") for p in patterns), relative
