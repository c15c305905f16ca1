"""Responses of immutable content (a stored policy's files) with an ETag, and the 304 that revalidates them."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.responses import Response

# A stored policy never changes (its bytes have a sha256), so what is built from it may be cached; ids are only
# reused after a database reset, and the ETag (built from the weights' hash) catches that on revalidation.
IMMUTABLE_CACHE_CONTROL = "public, max-age=3600"


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison against an If-None-Match list (`*`, `"a", W/"b"`)."""
    if if_none_match is None:
        return False
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


def immutable_response(
    etag: str,
    if_none_match: str | None,
    content: Callable[[], bytes],
    *,
    media_type: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """304 when If-None-Match names `etag` (without calling `content`: building it may be slow), else 200 with
    `content()` and `headers`; both carry the ETag and Cache-Control."""
    caching = {"ETag": etag, "Cache-Control": IMMUTABLE_CACHE_CONTROL}
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=caching)
    return Response(content(), media_type=media_type, headers={**caching, **(headers or {})})
