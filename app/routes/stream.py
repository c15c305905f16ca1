"""WS /act/stream: the control-loop stream (one connection, one session; app.serving.stream), and its OpenAPI page.

OpenAPI describes HTTP operations only, so `GET /act/stream` documents the protocol: a plain GET (no WebSocket
upgrade) answers with the same description.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from app.infra.errors import ApiError, error_body
from app.infra.security import check_bearer
from app.schemas.act import ActRequest, ActResponse, StreamInfo
from app.schemas.errors import ErrorResponse, error_responses
from app.serving.runtime import ActRuntime
from app.serving.stream import new_session_id, stream_answer

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/act/stream", tags=["act"])

STREAM_DESCRIPTION = """A WebSocket for control loops: `ws://host/act/stream?model=NAME` (no `model`: DEFAULT_MODEL).

One connection is one session (`session` is the connection; do not send one, nor `model`). Each text message is an
/act body, `{"observation": [...], "reward": r, "done": false}` (`reward`: of the previous step; `done`: the episode
ended in a terminal state, or `truncated`: it was cut short, by a time limit or the client), and each answer is
the /act answer, `{"action": [...], "policy_id": N}`, in order. A bad message is answered
with the error body (`{"error": {...}}`, the field named) and the stream goes on. The policy never changes within an
episode; after `done` or `truncated` the next message starts a new one. With ACT_API_KEY set, the handshake needs
`Authorization: Bearer <key>`: without it, as for an unknown or invalid `model`, the connection is accepted, sends
its error body (`unauthorized`, `not_found`, `validation_error`) and closes with code 1008."""

# Message schemas, for the OpenAPI page.
_MESSAGES = {
    "message": ActRequest.model_json_schema(),
    "answer": {"oneOf": [ActResponse.model_json_schema(), ErrorResponse.model_json_schema()]},
}

# WebSocket close code for a refused connection (RFC 6455: policy violation).
POLICY_VIOLATION = 1008


@router.get(
    "",
    response_model=StreamInfo,
    description=STREAM_DESCRIPTION,
    responses=error_responses(422),
    openapi_extra={"x-websocket-messages": _MESSAGES},
)
def stream_info(model: Annotated[str | None, Query(max_length=64)] = None) -> StreamInfo:
    """The control-loop stream is a WebSocket at this path; a plain GET only says how to use it."""
    path = "/act/stream" if model is None else f"/act/stream?model={model}"
    return StreamInfo(websocket=path, description=STREAM_DESCRIPTION)


@router.websocket("")
async def act_stream(websocket: WebSocket, model: Annotated[str | None, Query(max_length=64)] = None) -> None:
    """One session per connection: each message an /act body, each answer the /act answer."""
    runtime: ActRuntime = websocket.app.state.act_runtime
    if runtime.act_api_key is not None:
        try:
            check_bearer(websocket.headers.get("authorization"), runtime.act_api_key)
        except ApiError as exc:
            # Accepted first: a close before the handshake completes reaches the client as HTTP 403, not as 1008.
            await websocket.accept()
            await websocket.send_text(error_body(exc.code, exc.message).decode())
            await websocket.close(code=POLICY_VIOLATION, reason="missing or wrong ACT_API_KEY bearer token")
            return
    await websocket.accept()
    routing = runtime.routing
    if model is not None and model not in routing.cache.models:
        message = f"no model named {model!r} (GET /models lists them)"
        details = [{"field": "model", "message": message}]
        await websocket.send_text(error_body("not_found", f"model: {message}", details).decode())
        await websocket.close(code=POLICY_VIOLATION, reason="unknown model")
        return
    session = new_session_id()
    key = (model or routing.default_model, session)
    try:
        while True:
            frame = await websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            data = frame.get("bytes")
            if data is None:
                data = (frame.get("text") or "").encode()
            answer = await stream_answer(routing, model, session, data, runtime.max_batch)
            await websocket.send_text(answer.decode())
    except WebSocketDisconnect:
        return
    finally:
        # The episode in progress ends with its connection, uncounted (no `done` came).
        routing.sessions.end(key)
