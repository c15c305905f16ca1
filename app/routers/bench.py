"""POST /bench/noop: the limit of this HTTP stack, for bench/serve_bench.py (only when BENCH_ENDPOINTS=1).

It does everything /act does except choosing a policy and the forward pass, so the ratio of the two
measures exactly what serving a policy costs on top of the framework.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.observations import parse_act_body
from app.routers.act import ActRuntime, json_request_body, require_json_content_type
from app.schemas import ActRequest, error_responses
from app.security import check_bearer

router = APIRouter(prefix="/bench", tags=["bench"])

_CONSTANT = b'{"ok":true}'


@router.post(
    "/noop",
    response_model=None,
    openapi_extra=json_request_body(ActRequest),
    responses={200: {"description": 'Always `{"ok": true}`.'}, **error_responses(401, 413, 415, 422)},
)
async def noop(request: Request) -> Response:
    """Parse and validate an /act body exactly like /act, then return a constant (benchmark baseline)."""
    runtime: ActRuntime = request.app.state.act_runtime
    if runtime.act_api_key is not None:
        check_bearer(request.headers.get("authorization"), runtime.act_api_key)
    require_json_content_type(request)
    parse_act_body(await request.body(), runtime.max_batch)
    return Response(_CONSTANT, media_type="application/json")
