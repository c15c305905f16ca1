"""The control-loop stream: one WebSocket connection is one session; each message is an /act body, each answer the
/act answer (or the error, in the service's error shape, with the connection left open).

A control loop sends a step, waits for the action, sends the next. Over HTTP each step pays for a request (headers,
routing, a fresh response); over one WebSocket a step is one small frame each way, and the session is the
connection itself, so it also never leaves the process that pinned it.

A connection chooses its encoding when it opens (`?encoding=`): JSON text frames (the default), or msgpack binary
frames carrying the same maps (`{"observation": [...], "reward": r, "done": false}` in, `{"action": [...],
"policy_id": N}` or `{"error": {...}}` out). A msgpack message decodes to the values a JSON one would, and goes
through the same checks (app.serving.observations.parse_act_payload), so both encodings answer alike.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from typing import Any

import msgpack
import orjson

from app.infra.errors import ApiError, error_body, field_error
from app.serving.observations import ActInput, parse_act_body, parse_act_payload
from app.serving.routed_act import act_routed
from app.serving.routing import Routing


class StreamEncoding(StrEnum):
    """How a stream's messages are framed, chosen at connect time with `?encoding=`."""

    JSON = "json"
    MSGPACK = "msgpack"


def new_session_id() -> str:
    """A session id no client can collide with: the connection's own."""
    return f"stream-{secrets.token_hex(12)}"


async def stream_answer(
    routing: Routing,
    model: str | None,
    session: str,
    message: bytes,
    max_batch: int,
    *,
    encoding: StreamEncoding = StreamEncoding.JSON,
) -> bytes:
    """The answer to one message of the stream, in the stream's encoding (an error body for a bad one: the stream
    goes on)."""
    try:
        # With the session set, the parser refuses batches (a session is one episode) and a body's own session.
        if encoding is StreamEncoding.JSON:
            return await act_routed(routing, parse_act_body(message, max_batch, session=session, model=model))
        answer = await act_routed(routing, _parse_msgpack(message, max_batch, session, model))
    except ApiError as exc:
        answer = error_body(exc.code, exc.message, exc.details)
        if encoding is StreamEncoding.JSON:
            return answer
    return to_msgpack(answer)


def encode(content: bytes, encoding: StreamEncoding) -> bytes:
    """A JSON answer or error body in the stream's encoding."""
    return content if encoding is StreamEncoding.JSON else to_msgpack(content)


def to_msgpack(content: bytes) -> bytes:
    """A JSON answer as the same map in msgpack (numbers as float64, as JSON's are read)."""
    packed: bytes = msgpack.packb(orjson.loads(content))
    return packed


def _parse_msgpack(message: bytes, max_batch: int, session: str, model: str | None) -> ActInput:
    """A msgpack message -> the checked step, or the 422 naming what is wrong (the same checks as JSON's)."""
    if not message:
        raise field_error("body", "a msgpack message is required")
    try:
        payload: Any = msgpack.unpackb(message, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # ExtraData, FormatError, StackError, bad UTF-8
        raise ApiError(
            422,
            "validation_error",
            "body: not valid msgpack",
            details=[{"field": "body", "message": f"not valid msgpack: {exc}", "type": "msgpack_invalid"}],
        ) from None
    if type(payload) is not dict or any(type(key) is not str for key in payload):
        raise field_error(
            "body", "must be a msgpack map with string keys, `observation` and optionally `reward`, `done`"
        )
    # msgpack has no `true` to search for in the bytes: b"true" makes the slow conversion always look for booleans.
    return parse_act_payload(payload, b"true", max_batch, session=session, model=model)
