"""The interactive API docs, `/docs` (Swagger UI) and `/redoc`, from assets vendored in app/static/vendor.

FastAPI's own docs pages load Swagger UI, ReDoc, their favicon and Google Fonts from CDNs, so on a machine without
internet `/docs` is a blank page. The app turns those off (docs_url=None, redoc_url=None) and these routes serve the
same pages with local URLs. Vendored versions (npm): swagger-ui-dist 5.36.0, redoc 2.5.4.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import HTMLResponse

# Served by the dashboard's /static mount; the license files sit beside them.
VENDOR_URL = "/static/vendor"
SWAGGER_JS = f"{VENDOR_URL}/swagger-ui-bundle.js"
SWAGGER_CSS = f"{VENDOR_URL}/swagger-ui.css"
REDOC_JS = f"{VENDOR_URL}/redoc.standalone.js"
FAVICON = f"{VENDOR_URL}/swagger-ui-favicon-32x32.png"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
# Nothing from other hosts, even what the bundles themselves name: ReDoc's menu shows a logo from Redocly's CDN
# (hidden when it fails to load). The pages' inline start-up script and styles are their own.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:"
)

router = APIRouter(include_in_schema=False)


def _self_contained(
    request: Request, name: str, render: Callable[..., HTMLResponse], **asset_paths: str
) -> HTMLResponse:
    """FastAPI's page `render` over this app's OpenAPI document, its assets (keyword -> path) served here."""
    # Behind a proxy that mounts the app under a path, every URL of the page needs that path too.
    prefix = str(request.scope.get("root_path", "")).rstrip("/")
    page = render(
        openapi_url=prefix + (request.app.openapi_url or "/openapi.json"),
        title=f"{request.app.title} - {name}",
        **{keyword: prefix + path for keyword, path in asset_paths.items()},
    )
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over this app's OpenAPI document."""
    return _self_contained(
        request,
        "Swagger UI",
        get_swagger_ui_html,
        swagger_js_url=SWAGGER_JS,
        swagger_css_url=SWAGGER_CSS,
        swagger_favicon_url=FAVICON,
        oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
    )


@router.get(OAUTH2_REDIRECT_PATH)
def swagger_ui_oauth2_redirect() -> HTMLResponse:
    """The page Swagger UI's OAuth2 flow returns to (kept as FastAPI serves it by default; self-contained)."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over this app's OpenAPI document (without Google Fonts: the system's fonts)."""
    render = partial(get_redoc_html, with_google_fonts=False)
    return _self_contained(request, "ReDoc", render, redoc_js_url=REDOC_JS, redoc_favicon_url=FAVICON)
