"""Pure-ASGI dispatch of `POST /act` (and, in benchmark mode, `POST /bench/noop`) ahead of FastAPI's router.

Measured (bench/serve_bench.py): for a one-observation /act, FastAPI's route matching (it walks every
included router), dependency solving, exit stacks and Request/Response objects cost several times the parse and
forward pass themselves. This middleware sits innermost (inside the metrics and body-size middlewares, so both
still apply) and answers these two exact paths itself with the same functions the FastAPI endpoints call:
`check_act_headers`, then `act_content` / `noop_content`. Everything else, including other methods on these
paths, goes to FastAPI unchanged, and the FastAPI routes stay for OpenAPI and for apps built without this.

Errors keep their shape: an exception is answered by the app's own exception handlers (looked up as Starlette's
ExceptionMiddleware does), and one without a handler propagates to ServerErrorMiddleware as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.serving.runtime import ActRuntime, act_content, check_act_headers, noop_content

ContentHandler = Callable[[ActRuntime, bytes], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class FastRoute:
    """Stored as scope["route"], where MetricsMiddleware reads the route template (`path`)."""

    path: str
    handler: ContentHandler


class ActFastPath:
    def __init__(self, app: ASGIApp, *, bench_endpoints: bool = False) -> None:
        self.app = app
        self.routes = {"/act": FastRoute("/act", act_content)}
        if bench_endpoints:
            self.routes["/bench/noop"] = FastRoute("/bench/noop", noop_content)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :]
        route = self.routes.get(path)
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        try:
            authorization = content_type = None
            for name, value in scope["headers"]:  # the first of repeated headers, as Request.headers.get does
                if name == b"authorization" and authorization is None:
                    authorization = value.decode("latin-1")
                elif name == b"content-type" and content_type is None:
                    content_type = value.decode("latin-1")
            runtime: ActRuntime = scope["app"].state.act_runtime
            check_act_headers(runtime, authorization, content_type)
            content = await route.handler(runtime, await read_body(receive))
        except Exception as exc:
            response = await handled_by_app(scope, receive, exc)
            await response(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": content})


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def handled_by_app(scope: Scope, receive: Receive, exc: Exception) -> Response:
    """The app's answer to `exc` from its exception handlers; re-raise `exc` when none applies.

    As Starlette's ExceptionMiddleware: a status-code handler for an HTTPException first, then the nearest class
    in the exception's MRO; handlers for 500 and Exception belong to ServerErrorMiddleware, so they are left to it.
    """
    handlers = scope["app"].exception_handlers
    handler = None
    if isinstance(exc, HTTPException) and exc.status_code != 500:
        handler = handlers.get(exc.status_code)
    if handler is None:
        for cls in type(exc).__mro__:
            if cls is Exception:
                break
            handler = handlers.get(cls)
            if handler is not None:
                break
    if handler is None:
        raise exc
    response = handler(Request(scope, receive), exc)
    if inspect.isawaitable(response):
        response = await response
    assert isinstance(response, Response)
    return response
