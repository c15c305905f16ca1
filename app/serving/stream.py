"""The control-loop stream: one WebSocket connection is one session; each message is an /act body, each answer the
/act answer (or the error, in the service's error shape, with the connection left open).

A control loop sends a step, waits for the action, sends the next. Over HTTP each step pays for a request (headers,
routing, a fresh response); over one WebSocket a step is one small frame each way, and the session is the
connection itself, so it also never leaves the process that pinned it.
"""

from __future__ import annotations

import secrets

from app.infra.errors import ApiError, error_body
from app.serving.observations import parse_act_body
from app.serving.routed_act import act_routed
from app.serving.routing import Routing


def new_session_id() -> str:
    """A session id no client can collide with: the connection's own."""
    return f"stream-{secrets.token_hex(12)}"


async def stream_answer(routing: Routing, model: str | None, session: str, message: bytes, max_batch: int) -> bytes:
    """The answer to one message of the stream (an error body for a bad one: the stream goes on)."""
    try:
        # With the session set, the parser refuses batches (a session is one episode) and a body's own session.
        return await act_routed(routing, parse_act_body(message, max_batch, session=session, model=model))
    except ApiError as exc:
        return error_body(exc.code, exc.message, exc.details)
