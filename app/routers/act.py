"""POST /act: the hot path. Actions for one observation or a batch, from the default or a chosen policy.

Deliberately not a pydantic-bodied endpoint: an `async def` (no thread-pool hop) reads the raw body, parses it
with orjson straight into a float32 array (app.observations), runs the numpy actor inline (microseconds),
and answers with orjson bytes. No database call unless an uncached explicit policy_id is asked for. The
request schema is still documented in OpenAPI via `openapi_extra`.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from fastapi import APIRouter, Request
from pydantic import SecretStr
from starlette.responses import Response

from app.errors import ApiError, field_error
from app.metrics import Metrics
from app.observations import ActInput, parse_act_body
from app.policy_cache import LoadedPolicy, PolicyCache, PolicyUnavailableError
from app.schemas import ActBatchResponse, ActRequest, ActResponse, error_responses
from app.security import check_bearer

router = APIRouter(prefix="/act", tags=["act"])

NO_POLICY_RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True, slots=True)
class ActRuntime:
    """What /act needs, gathered once at start-up so a request does one attribute lookup, not several."""

    cache: PolicyCache
    metrics: Metrics
    max_batch: int
    act_api_key: SecretStr | None


def json_request_body(model: type[ActRequest]) -> dict[str, object]:
    """`openapi_extra` documenting a hand-parsed JSON body with a pydantic model's schema."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def require_json_content_type(request: Request) -> None:
    """415 for a body declared as something other than JSON (a missing Content-Type is read as JSON)."""
    check_json_content_type(request.headers.get("content-type"))


def check_json_content_type(content_type: str | None) -> None:
    """The check of require_json_content_type on the header value itself (for the pure-ASGI fast path)."""
    if content_type is None:
        return
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise ApiError(415, "unsupported_media_type", f"expected Content-Type application/json, got {media_type!r}")


def _no_policy() -> ApiError:
    return ApiError(
        503,
        "no_policy",
        "no policy is loaded yet: train one (POST /train) or set POLICY_FILE; retry shortly",
        headers={"Retry-After": str(NO_POLICY_RETRY_AFTER_SECONDS)},
    )


async def _explicit_policy(cache: PolicyCache, policy_id: int) -> LoadedPolicy:
    try:
        found = await cache.get(policy_id)
    except PolicyUnavailableError:
        raise ApiError(503, "policy_unavailable", f"policy {policy_id} cannot be loaded") from None
    if found is None:
        raise ApiError(404, "not_found", f"policy {policy_id} not found")
    return found


def _wrong_obs_dim(parsed: ActInput, loaded: LoadedPolicy) -> ApiError:
    field = "observations[0]" if parsed.batched else "observation"
    expected, policy_id = loaded.actor.obs_dim, loaded.policy_id
    return field_error(field, f"expected {expected} numbers (obs_dim of policy {policy_id}), got {parsed.obs_dim}")


@router.post(
    "",
    response_model=None,
    summary="Actions for observations",
    openapi_extra=json_request_body(ActRequest),
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
    # app.fast_path answers POST /act before FastAPI's router; this endpoint documents it and serves any app
    # built without that middleware. Both run check_act_headers, then act_content: one behaviour.
    runtime: ActRuntime = request.app.state.act_runtime
    check_act_headers(runtime, request.headers.get("authorization"), request.headers.get("content-type"))
    return Response(await act_content(runtime, await request.body()), media_type="application/json")


def check_act_headers(runtime: ActRuntime, authorization: str | None, content_type: str | None) -> None:
    """401 without the ACT_API_KEY bearer token (when one is set), then 415 for a non-JSON Content-Type."""
    if runtime.act_api_key is not None:
        check_bearer(authorization, runtime.act_api_key)
    check_json_content_type(content_type)


async def act_content(runtime: ActRuntime, body: bytes) -> bytes:
    """The JSON answer of POST /act for a raw request body (ApiError for a request that cannot be served)."""
    parsed = parse_act_body(body, runtime.max_batch)
    if parsed.policy_id is None:
        # Read the swapped reference exactly once: this request uses this policy, whatever swaps next.
        loaded = runtime.cache.default
        if loaded is None:
            raise _no_policy()
    else:
        loaded = await _explicit_policy(runtime.cache, parsed.policy_id)
    if parsed.obs_dim != loaded.actor.obs_dim:
        raise _wrong_obs_dim(parsed, loaded)
    runtime.metrics.act_batch_size.observe(parsed.count)
    if parsed.batched:
        actions = loaded.actor.act(parsed.observations)
        return orjson.dumps({"actions": actions, "policy_id": loaded.policy_id}, option=orjson.OPT_SERIALIZE_NUMPY)
    # One observation: the actor's list-of-floats route skips building an array just to serialise it.
    return orjson.dumps({"action": loaded.actor.act_one(parsed.observations), "policy_id": loaded.policy_id})
