"""POST /act: the hot path. Actions for one observation or a batch, from the default or a chosen policy.

Deliberately not a pydantic-bodied endpoint: an `async def` (no thread-pool hop) reads the raw body, parses it
with orjson straight into a float32 array (app.serving.observations), runs the numpy actor inline (microseconds),
and answers with orjson bytes. No database call unless an uncached explicit policy_id is asked for. The
request schema is still documented in OpenAPI via `openapi_extra`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.routes.openapi_security import NEEDS_ACT_KEY
from app.schemas.act import ActBatchResponse, ActRequest, ActResponse
from app.schemas.errors import error_responses, json_request_body
from app.serving.runtime import ActRuntime, act_content, check_act_headers

router = APIRouter(prefix="/act", tags=["act"])


@router.post(
    "",
    response_model=None,
    summary="Actions for observations",
    openapi_extra={**json_request_body(ActRequest), **NEEDS_ACT_KEY},
    responses={
        200: {
            "model": ActResponse | ActBatchResponse,
            "description": "`action` for `observation`, "
            "`actions` for `observations`; `policy_id` names the policy that computed them.",
        },
        **error_responses(401, 404, 413, 415, 422, 503),
    },
)
async def act(request: Request) -> Response:
    """Compute the action for `observation` (or each of `observations`) with the default or given policy."""
    # app.serving.fast_path answers POST /act before FastAPI's router; this endpoint documents it and serves any
    # app built without that middleware. Both run check_act_headers, then act_content: one behaviour.
    runtime: ActRuntime = request.app.state.act_runtime
    check_act_headers(runtime, request.headers.get("authorization"), request.headers.get("content-type"))
    return Response(await act_content(runtime, await request.body()), media_type="application/json")
