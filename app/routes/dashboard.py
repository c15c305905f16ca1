"""The dashboard: a static page at `/` (plain HTML, CSS and JavaScript over this API; no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)
# The page's own files and the vendored Chart.js; nothing is loaded from other hosts.
router.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


@router.get("/")
def dashboard() -> FileResponse:
    """The dashboard page."""
    # no-cache: browsers revalidate (cheap, ETag/Last-Modified), so a new release's page shows at once.
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
