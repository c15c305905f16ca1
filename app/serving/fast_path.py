"""`POST /act` (and, in benchmark mode, `POST /bench/noop`) answered ahead of the whole ASGI stack.

Measured (bench/serve_bench.py, one uvicorn worker, wrk with 16 connections): a bare ASGI app answering a constant
on the same uvicorn did 51,000 requests/s; `/act` 27,000, although parsing, the forward pass and serialising take
about 5 microseconds of its 37. The rest was layering: FastAPI's and Starlette's own middlewares (server errors,
exception telemetry, body limit), ours (metrics, body limit), each a coroutine and a `send` wrapper per request,
then the dispatch itself. So `FastPathApp` (the service's FastAPI) looks at every request before any of that, and a
POST to one of these exact paths is answered by its `FastRoute` alone, which does inline what those layers did for
it, with the same functions the FastAPI endpoints call (`check_act_headers`, then `act_answer` / `noop_answer`, which
`act_content` / `noop_content` wrap):

- the body limit (app.infra.body_limit's rules): a declared Content-Length over MAX_BODY_BYTES is answered 413 with
  `Connection: close` before a byte is read; a body without one is counted as it arrives, 413 past the limit;
- the request metrics (app.infra.metrics): the same `http_requests` and `http_request_duration_seconds` children,
  labelled `POST`, the route's path and the status, resolved once for 200; a declared-too-large 413 is labelled
  `<unmatched>`, as the body-size middleware's answer is for every other route (it answers before routing);
- errors keep their shape: an exception is answered by the app's own exception handlers (looked up as Starlette's
  ExceptionMiddleware does), and one without a handler as Starlette's ServerErrorMiddleware does (the app's 500
  handler, then re-raised so the server logs it).

Everything else, including other methods on these paths, goes to FastAPI unchanged, and the FastAPI routes stay for
OpenAPI. Not seen by the fast path: FastAPI's own OpenTelemetry instrumentation, which this service does not
configure.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import Message, Receive, Scope, Send

from app.infra.body_limit import too_large_error, too_large_response
from app.infra.metrics import UNMATCHED_ROUTE, Metrics
from app.serving.runtime import ActRuntime, Answer, act_answer, check_act_headers, noop_answer

AnswerHandler = Callable[[ActRuntime, bytes], Answer]

# Response-start messages are prebuilt per body length up to this many bytes (a one-observation answer is ~50 bytes,
# a 64-observation batch ~1.3 KB): a dict lookup instead of a new message, header list and encoded length.
_PREBUILT_START_MAX_LENGTH = 4096
_JSON = (b"content-type", b"application/json")


class FastPathApp(FastAPI):
    """FastAPI whose `fast_routes` (exact paths, POST only) are answered before its middleware stack."""

    # Replaced whole by install_fast_path, never mutated: the class default is the empty table of an app without it.
    fast_routes: dict[str, FastRoute] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            root_path = scope.get("root_path")
            if root_path and path.startswith(root_path):  # as Starlette's router reads a path under a root_path
                path = path[len(root_path) :]
            route = self.fast_routes.get(path)
            if route is not None:
                await route(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def install_fast_path(app: FastPathApp, metrics: Metrics, *, max_body_bytes: int, bench_endpoints: bool) -> None:
    """Answer POST /act (and POST /bench/noop with `bench_endpoints`) on the fast path."""
    routes = {"/act": FastRoute(app, "/act", act_answer, metrics, max_body_bytes)}
    if bench_endpoints:
        routes["/bench/noop"] = FastRoute(app, "/bench/noop", noop_answer, metrics, max_body_bytes)
    app.fast_routes = routes


class FastRoute:
    """One fast path: headers, body, content, response and metrics of one POST route, with nothing in between."""

    def __init__(self, app: FastAPI, path: str, handler: AnswerHandler, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.path = path
        self.handler = handler
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        # The lifespan sets app.state.act_runtime; its dict is read directly (State's __getattr__ costs a Python call).
        self._state: dict[str, Any] = app.state._state
        # The children an answered request adds to, resolved once (the same objects Metrics.observe_request uses).
        self._ok_count = metrics.requests.labels("POST", path, "200")
        self._ok_latency = metrics.latency.labels("POST", path, "200")
        self._starts: dict[int, Message] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        # One pass over the headers; the first of repeated ones counts, as Request.headers.get and the body-size
        # middleware read them.
        authorization = content_type = declared_length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if declared_length is None:
                    declared_length = value
            elif name == b"content-type":
                if content_type is None:
                    content_type = value
            elif name == b"authorization" and authorization is None:
                authorization = value
        # The order of the layers this replaces: the declared length (413), then the API key (401) and the
        # Content-Type (415), then the body (a 413 while it streams, a 422 once parsed).
        length_known = False
        if declared_length is not None:
            try:
                declared = int(declared_length)
            except ValueError:
                declared = -1
            if declared > self.max_body_bytes:
                await self._too_large(scope, receive, send, started)
                return
            # The server enforces a Content-Length itself, so the body cannot outgrow it: no counting needed.
            length_known = declared >= 0
        try:
            runtime: ActRuntime = self._state["act_runtime"]
            # Without an ACT_API_KEY, `application/json` as the bytes every client sends (or no Content-Type) needs
            # no check; anything else goes through the shared rule.
            if runtime.act_api_key is not None or (content_type is not None and content_type != b"application/json"):
                check_act_headers(
                    runtime,
                    None if authorization is None else authorization.decode("latin-1"),
                    None if content_type is None else content_type.decode("latin-1"),
                )
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False) and length_known:
                body: bytes = message.get("body", b"")  # nearly every request: its declared body in one message
            else:
                body = await self._read_body(message, receive, length_known)
            answer = self.handler(runtime, body)
            # The default route answers at once; only a routed request is awaited (no coroutine per request).
            content = answer if isinstance(answer, bytes) else await answer
        except Exception as exc:
            await self._answer_error(scope, receive, send, exc, started)
            return
        length = len(content)
        start = self._starts.get(length)
        if start is None:
            start = self._start_message(length)
        # The same prebuilt message for every answer of this length: uvicorn (and Starlette's test client) only
        # read the messages they are sent.
        await send(start)
        await send({"type": "http.response.body", "body": content})
        seconds = time.perf_counter() - started
        self._ok_count.inc()
        self._ok_latency.observe(seconds)

    async def _read_body(self, message: Message, receive: Receive, length_known: bool) -> bytes:
        """The whole body from its first message on; a 413 ApiError as soon as a body of undeclared length passes
        the limit."""
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body: bytes = message.get("body", b"")
        more_body: bool = message.get("more_body", False)
        chunks = [body]
        received = len(body)
        while True:
            if not length_known and received > self.max_body_bytes:
                raise too_large_error(self.max_body_bytes)
            if not more_body:
                return b"".join(chunks)
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            chunks.append(chunk)
            received += len(chunk)
            more_body = message.get("more_body", False)

    def _start_message(self, length: int) -> Message:
        message: Message = {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(length).encode()), _JSON],
        }
        if length <= _PREBUILT_START_MAX_LENGTH:
            self._starts[length] = message
        return message

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, started: float) -> None:
        await too_large_response(self.max_body_bytes)(scope, receive, send)
        self.metrics.observe_request("POST", UNMATCHED_ROUTE, 413, time.perf_counter() - started)

    async def _answer_error(self, scope: Scope, receive: Receive, send: Send, exc: Exception, started: float) -> None:
        """The app's answer to `exc`; without a handler for it, the server-error answer, then `exc` re-raised."""
        scope["app"] = self.app  # what Starlette sets before its stack; the handlers read it through Request.app
        handler = _exception_handler(self.app, exc)
        if handler is None:
            status = 500  # counted as the metrics middleware counts an exception: before any answer
            try:
                response = await _server_error_response(self.app, Request(scope, receive), exc)
                await response(scope, receive, send)
            finally:
                self.metrics.observe_request("POST", self.path, status, time.perf_counter() - started)
            raise exc
        answer = handler(Request(scope, receive), exc)
        if inspect.isawaitable(answer):
            answer = await answer
        assert isinstance(answer, Response)
        await answer(scope, receive, send)
        self.metrics.observe_request("POST", self.path, answer.status_code, time.perf_counter() - started)


def _exception_handler(app: FastAPI, exc: Exception) -> Callable[[Request, Exception], Any] | None:
    """As Starlette's ExceptionMiddleware: a status-code handler for an HTTPException first, then the nearest class
    in the exception's MRO; handlers for 500 and Exception belong to ServerErrorMiddleware, so they are left out."""
    handlers = app.exception_handlers
    if isinstance(exc, HTTPException) and exc.status_code != 500:
        handler = handlers.get(exc.status_code)
        if handler is not None:
            return handler
    for cls in type(exc).__mro__:
        if cls is Exception:
            break
        handler = handlers.get(cls)
        if handler is not None:
            return handler
    return None


async def _server_error_response(app: FastAPI, request: Request, exc: Exception) -> Response:
    """As Starlette's ServerErrorMiddleware (not in debug mode, which this service never runs): the app's handler
    for 500 or Exception, else a plain 500."""
    handler = app.exception_handlers.get(500) or app.exception_handlers.get(Exception)
    if handler is None:
        return PlainTextResponse("Internal Server Error", status_code=500)
    answer = handler(request, exc)
    if inspect.isawaitable(answer):
        answer = await answer
    assert isinstance(answer, Response)
    return answer
