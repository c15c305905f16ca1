"""The /act runtime: everything a request needs, gathered once at start-up, and the answer for a raw body.

Shared by the FastAPI route (`app.routes.act`), the pure-ASGI fast path (`app.serving.fast_path`) and the
protocol adapters, so every way of asking for an action behaves the same.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import SecretStr

from app.infra.content_type import check_json_content_type
from app.infra.metrics import Metrics
from app.infra.security import check_bearer
from app.serving.observations import parse_act_body
from app.serving.policy_cache import PolicyCache
from app.serving.routed_act import NO_POLICY_RETRY_AFTER_SECONDS, act_routed, check_obs_dim, sample_shadow
from app.serving.routing import Routing

# The protocol adapters import the retry hint from here, with the rest of the runtime.
__all__ = [
    "NOOP_CONTENT",
    "NO_POLICY_RETRY_AFTER_SECONDS",
    "ActRuntime",
    "Answer",
    "act_answer",
    "act_content",
    "check_act_headers",
    "noop_answer",
    "noop_content",
]

# The JSON answer at once, or, when it has to wait (a routed request may load a policy), the coroutine giving it.
Answer = bytes | Coroutine[Any, Any, bytes]

# What POST /bench/noop answers: the framework's limit, for the serving benchmark.
NOOP_CONTENT = b'{"ok":true}'


@dataclass(frozen=True, slots=True)
class ActRuntime:
    """What /act needs, gathered once at start-up so a request does one attribute lookup, not several."""

    cache: PolicyCache
    metrics: Metrics
    max_batch: int
    act_api_key: SecretStr | None
    routing: Routing


def check_act_headers(runtime: ActRuntime, authorization: str | None, content_type: str | None) -> None:
    """401 without the ACT_API_KEY bearer token (when one is set), then 415 for a non-JSON Content-Type."""
    if runtime.act_api_key is not None:
        check_bearer(authorization, runtime.act_api_key)
    check_json_content_type(content_type)


async def act_content(runtime: ActRuntime, body: bytes) -> bytes:
    """The JSON answer of POST /act for a raw body (ApiError for a request that cannot be served)."""
    answer = act_answer(runtime, body)
    return answer if isinstance(answer, bytes) else await answer


def act_answer(runtime: ActRuntime, body: bytes) -> Answer:
    """act_content for callers that await only when they must (the fast path: no coroutine on the default route).

    A request of observations alone, while the default model has no canary, takes one branch to its champion (and,
    under a shadow rollout, a second one to queue a sample) and is answered at once; anything else (a model, a policy
    id, a session, a canary on the default model, no policy yet) is routed by app.serving.routed_act.
    """
    parsed = parse_act_body(body, runtime.max_batch)
    # Read the swapped reference exactly once: this request uses this policy, whatever swaps next.
    loaded = runtime.cache.unsplit_default
    if parsed.extras is not None or loaded is None:
        return act_routed(runtime.routing, parsed)
    if parsed.obs_dim != loaded.actor.obs_dim:
        check_obs_dim(parsed, loaded)  # raises the 422
    runtime.metrics.act_batch_size.observe(parsed.count)
    actions: object
    if parsed.batched:
        actions = loaded.actor.act(parsed.observations)
        content = orjson.dumps({"actions": actions, "policy_id": loaded.policy_id}, option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        # One observation: the actor's list-of-floats route skips building an array just to serialise it.
        actions = loaded.actor.act_one(parsed.observations)
        content = orjson.dumps({"action": actions, "policy_id": loaded.policy_id})
    # A shadow rollout on the default model changes no answer: it only queues a sample for its challenger.
    shadow = runtime.cache.default_shadow
    if shadow is not None:
        sample_shadow(runtime.routing, runtime.routing.default_model, shadow, parsed, actions)
    return content


async def noop_content(runtime: ActRuntime, body: bytes) -> bytes:
    """What /act does with a body, minus choosing a policy and the forward pass."""
    return noop_answer(runtime, body)


def noop_answer(runtime: ActRuntime, body: bytes) -> bytes:
    """noop_content without the coroutine, as act_answer."""
    parse_act_body(body, runtime.max_batch)
    return NOOP_CONTENT
