"""Reject request bodies over MAX_BODY_BYTES with 413, before they are read whole.

A few routes take files (a policy upload: MAX_UPLOAD_BYTES) and have their own, larger limit: `upload_limits` pairs
a path pattern with it, for POST requests only. Every other request keeps the small limit, so /act stays cheap to
protect.

A declared Content-Length over the limit is answered at once, without reading a byte of the body. A chunked
body (no Content-Length) is counted as it streams in, and the first chunk that crosses the limit raises a
413 ApiError from `receive`, so the endpoint never holds more than the limit in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.infra.errors import ApiError, error_response


def too_large_error(limit: int) -> ApiError:
    """The 413 of a body that passed the limit while it streamed in."""
    return ApiError(413, "payload_too_large", f"request body exceeds the limit of {limit} bytes")


def too_large_response(limit: int) -> Response:
    """The 413 of a body declared too large, or found so outside any endpoint. `Connection: close`, because the
    unread body is still on the wire."""
    error = too_large_error(limit)
    return error_response(413, error.code, error.message, headers={"Connection": "close"})


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, upload_limits: Iterable[tuple[str, int]] = ()) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # (a path regex matched whole, its limit), for POST only.
        self.upload_limits = [(re.compile(pattern), limit) for pattern, limit in upload_limits]

    def limit_for(self, scope: Scope) -> int:
        """The body limit of this request: an upload route's own, else MAX_BODY_BYTES."""
        if scope.get("method") == "POST":
            path = scope.get("path", "")
            for pattern, limit in self.upload_limits:
                if pattern.fullmatch(path):
                    return limit
        return self.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await too_large_response(limit)(scope, receive, send)
                    return
                if declared >= 0:
                    # The server enforces Content-Length itself, so the body cannot outgrow it: no counting needed.
                    await self.app(scope, receive, send)
                    return
                break

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large_error(limit)
            return message

        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except ApiError as exc:
            # Normally the app's exception handler already answered; this covers a read outside any endpoint.
            if exc.status_code != 413 or response_started:
                raise
            await too_large_response(limit)(scope, receive, send)
