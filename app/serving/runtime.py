"""The /act runtime: everything a request needs, gathered once at start-up, and the answer for a raw body.

Shared by the FastAPI route (`app.routes.act`), the pure-ASGI fast path (`app.serving.fast_path`) and the
protocol adapters, so every way of asking for an action behaves the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from pydantic import SecretStr

from app.infra.content_type import check_json_content_type
from app.infra.errors import ApiError, field_error
from app.infra.metrics import Metrics
from app.infra.security import check_bearer
from app.serving.observations import ActInput, parse_act_body
from app.serving.policy_cache import LoadedPolicy, PolicyCache, PolicyUnavailableError

NO_POLICY_RETRY_AFTER_SECONDS = 5
# What POST /bench/noop answers: the framework's limit, for the serving benchmark.
NOOP_CONTENT = b'{"ok":true}'


@dataclass(frozen=True, slots=True)
class ActRuntime:
    """What /act needs, gathered once at start-up so a request does one attribute lookup, not several."""

    cache: PolicyCache
    metrics: Metrics
    max_batch: int
    act_api_key: SecretStr | None


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


async def noop_content(runtime: ActRuntime, body: bytes) -> bytes:
    """What /act does with a body, minus choosing a policy and the forward pass."""
    parse_act_body(body, runtime.max_batch)
    return NOOP_CONTENT
