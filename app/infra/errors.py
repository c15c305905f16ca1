"""One JSON error shape for every error response: {"error": {"code", "message", "details"}}.

Every exception that reaches the client goes through here, so clients parse one shape and no stack trace
or internal message ever leaks (unexpected exceptions are logged server-side and answered with a fixed text).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

import fastapi.routing
import orjson
from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.status import WS_1008_POLICY_VIOLATION

from app.infra.log_filters import escape_for_log

logger = logging.getLogger(__name__)

# Stable machine-readable codes for the statuses the framework raises on its own (routing, methods).
_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(StarletteHTTPException):
    """An error with a stable code, a human message and optional per-field details.

    Subclassing Starlette's HTTPException matters: FastAPI re-raises HTTPExceptions raised while it reads the
    body (e.g. by the body-size limit) instead of turning them into a generic 400.
    """

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=dict(headers) if headers else None)
        self.code = code
        self.message = message
        self.details = [dict(d) for d in details]


def field_error(field: str, message: str, status_code: int = 422) -> ApiError:
    """A validation error about one field, in the same shape as pydantic's (field named in message and details)."""
    return ApiError(
        status_code, "validation_error", f"{field}: {message}", details=[{"field": field, "message": message}]
    )


def not_found(what: str, row_id: int) -> ApiError:
    """404 for a stored row that does not exist: `job 7 not found`."""
    return ApiError(404, "not_found", f"{what} {row_id} not found")


Row = TypeVar("Row")


def found_or_404(row: Row | None, what: str, row_id: int) -> Row:
    """`row`, unless it is None (what a lookup by id answers for an unknown one): then the 404 naming it."""
    if row is None:
        raise not_found(what, row_id)
    return row


def error_body(code: str, message: str, details: Sequence[Mapping[str, Any]] = ()) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "details": list(details)}})


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Sequence[Mapping[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        error_body(code, message, details), status_code=status_code, media_type="application/json", headers=headers
    )


def _field_path(loc: Sequence[int | str]) -> str:
    """('body', 'episodes') -> 'episodes'; ('query', 'limit') -> 'limit'; list indices as [i]."""
    parts = list(loc[1:]) if loc and loc[0] in ("body", "query", "path", "header") else list(loc)
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or (str(loc[0]) if loc else "request")


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic's error list -> [{"field", "message", "type"}], without echoing the (possibly huge) input."""
    details = []
    for err in errors:
        loc = err.get("loc", ())
        if err.get("type") == "json_invalid":
            details.append({"field": "body", "message": "request body is not valid JSON", "type": "json_invalid"})
            continue
        field = _field_path(loc)
        # pydantic prefixes a validator's own message with "Value error, ": the message is the point, not the kind.
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "missing" and not loc[1:] and loc and loc[0] == "body":
            field, message = "body", "a JSON request body is required"
        details.append({"field": field, "message": message, "type": str(err.get("type", "value_error"))})
    return details


async def _api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)


async def _http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES_BY_STATUS.get(exc.status_code, "http_error")
    # Starlette's own details ("Not Found", "Method Not Allowed") are safe to show; they carry no internals.
    message = str(exc.detail) if exc.detail else code.replace("_", " ")
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": allowed_methods(request)}
    return error_response(exc.status_code, code, message, headers=headers)


def allowed_methods(request: Request) -> str:
    """Every method the request's path allows, for a 405's `Allow` (RFC 9110).

    Starlette's router answers 405 from the first route whose path matched, so its `Allow` names only that route's
    methods, although a path such as /models/{name}/rollout has one route per method."""
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for route in _every_route(request.app):
        path_format, route_methods = getattr(route, "path_format", None), getattr(route, "methods", None)
        if path_format and route_methods and compile_path(path_format)[0].match(path):
            methods |= route_methods
    return ", ".join(sorted(methods))


def _every_route(app: FastAPI) -> Iterable[Any]:
    """Every route of the app, those of included routers too: recent FastAPI keeps an included router whole in
    `app.routes` (its `iter_route_contexts` lists the routes inside), older versions copy each route there."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    return flatten(app.routes) if flatten is not None else app.routes


async def _validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = validation_details(exc.errors())
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5]) or "invalid request"
    return error_response(422, "validation_error", message, details)


async def _websocket_validation_error_handler(websocket: WebSocket, exc: Exception) -> None:
    """A WebSocket whose query is invalid (`?model=` too long): accepted, told why, closed with 1008.

    FastAPI's own handler closes before accepting, which the client sees as an HTTP 403 with no reason."""
    assert isinstance(exc, WebSocketRequestValidationError)
    details = validation_details(exc.errors())
    message = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5]) or "invalid request"
    await websocket.accept()
    await websocket.send_text(error_body("validation_error", message, details).decode())
    await websocket.close(code=WS_1008_POLICY_VIOLATION, reason="invalid request")


async def _database_error_handler(request: Request, exc: Exception) -> Response:
    # Connection refused, server gone, pool exhausted: the client should retry later, not see a 500 or a DSN.
    path = escape_for_log(request.url.path)  # decoded: a client's %00 or %1b would be a raw control character
    logger.warning("database unavailable on %s %s: %s", request.method, path, type(exc).__name__)
    return error_response(
        503, "database_unavailable", "the database is unavailable; retry shortly", headers={"Retry-After": "5"}
    )


async def _unhandled_error_handler(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log, never to the client.
    logger.exception("unhandled error on %s %s", request.method, escape_for_log(request.url.path))
    return error_response(500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error through the one shape."""
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(WebSocketRequestValidationError, _websocket_validation_error_handler)
    for database_error in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(database_error, _database_error_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)
