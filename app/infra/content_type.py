"""The Content-Type rule of JSON endpoints: 415 for a body declared as something other than JSON."""

from __future__ import annotations

from app.infra.errors import ApiError


def check_json_content_type(content_type: str | None) -> None:
    """415 unless the declared media type is JSON (`application/json` or `application/*+json`); none is read as JSON."""
    if content_type is None:
        return
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise ApiError(415, "unsupported_media_type", f"expected Content-Type application/json, got {media_type!r}")
