"""POST /bench/noop: the limit of this HTTP stack, for bench/serve_bench.py (only when BENCH_ENDPOINTS=1).

It does everything /act does except choosing a policy and the forward pass, so the ratio of the two
measures exactly what serving a policy costs on top of the framework. Like /act, it is answered by
app.serving.fast_path (same dispatch cost, whatever the position of its router among the others).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.schemas.act import ActRequest
from app.schemas.errors import error_responses, json_request_body
from app.serving.runtime import ActRuntime, check_act_headers, noop_content

router = APIRouter(prefix="/bench", tags=["bench"])


@router.post(
    "/noop",
    response_model=None,
    openapi_extra=json_request_body(ActRequest),
    responses={200: {"description": 'Always `{"ok": true}`.'}, **error_responses(401, 413, 415, 422)},
)
async def noop(request: Request) -> Response:
    """Parse and validate an /act body exactly like /act, then return a constant (benchmark baseline)."""
    runtime: ActRuntime = request.app.state.act_runtime
    check_act_headers(runtime, request.headers.get("authorization"), request.headers.get("content-type"))
    return Response(await noop_content(runtime, await request.body()), media_type="application/json")
