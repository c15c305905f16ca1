"""The interactive API docs, `/docs` (Swagger UI) and `/redoc`, from assets vendored in app/static/vendor.

FastAPI's own docs pages load Swagger UI, ReDoc, their favicon and Google Fonts from CDNs, so on a machine without
internet `/docs` is a blank page. The app turns those off (docs_url=None, redoc_url=None) and these routes serve the
same pages with local URLs. Vendored versions (npm): swagger-ui-dist 5.36.0, redoc 2.5.4.
"""

from __future__ import annotations

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


def _prefix(request: Request) -> str:
    # Behind a proxy that mounts the app under a path, every URL of the page needs that path too.
    return str(request.scope.get("root_path", "")).rstrip("/")


def _openapi_url(request: Request) -> str:
    return _prefix(request) + (request.app.openapi_url or "/openapi.json")


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over this app's OpenAPI document."""
    prefix = _prefix(request)
    page = get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=prefix + SWAGGER_JS,
        swagger_css_url=prefix + SWAGGER_CSS,
        swagger_favicon_url=prefix + FAVICON,
        oauth2_redirect_url=prefix + OAUTH2_REDIRECT_PATH,
    )
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


@router.get(OAUTH2_REDIRECT_PATH)
def swagger_ui_oauth2_redirect() -> HTMLResponse:
    """The page Swagger UI's OAuth2 flow returns to (kept as FastAPI serves it by default; self-contained)."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over this app's OpenAPI document."""
    prefix = _prefix(request)
    page = get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=prefix + REDOC_JS,
        redoc_favicon_url=prefix + FAVICON,
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page
