"""What the KServe V1 and Open Inference V2 adapters share: their error shape, the model lookup, the inference key,
the JSON body, the observations and the forward pass.

Errors here use these protocols' own shape, `{"error": "<message>"}`, not the service's, because their clients
parse that one. A model `{name}` is a named model (its champion answers; a version is one of its policy ids),
`default` (the default model's champion, what /act serves) or a policy id (whose one version is itself). These
protocols carry no session, so a model's rollout does not apply to them: its champion answers. Observations go
through the same checks as /act's (app.serving.observations); an ObservationError is answered as a 400 in this
shape, the field named at the start of the message.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec

import numpy as np
import orjson
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from app.infra.errors import ApiError
from app.infra.security import check_bearer
from app.serving.observations import MAX_ID, FloatArray, ObservationError, to_float32
from app.serving.policy_cache import LoadedPolicy, PolicyCache, PolicyUnavailableError
from app.serving.runtime import NO_POLICY_RETRY_AFTER_SECONDS, ActRuntime
from app.serving.served_models import ServedModel

_POLICY_ID = re.compile(r"[1-9][0-9]{0,9}")
_RETRY_AFTER = {"Retry-After": str(NO_POLICY_RETRY_AFTER_SECONDS)}

P = ParamSpec("P")


class ProtocolError(Exception):
    """An error answered as `{"error": message}` (KServe V1 and V2 both use that shape)."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers

    def response(self) -> Response:
        return json_response({"error": self.message}, self.status_code, self.headers)


def json_response(content: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json", headers=headers)


def answers_errors(handler: Callable[P, Awaitable[Response]]) -> Callable[P, Awaitable[Response]]:
    """Decorate a protocol handler: the ProtocolError or ObservationError it raises becomes its error response."""

    @functools.wraps(handler)
    async def answered(*args: P.args, **kwargs: P.kwargs) -> Response:
        try:
            return await handler(*args, **kwargs)
        except ProtocolError as exc:
            return exc.response()
        except ObservationError as exc:
            return ProtocolError(400, f"{exc.field} {exc.problem}").response()

    return answered


def runtime_of(request: Request) -> ActRuntime:
    """The /act runtime (policy cache, metrics, MAX_BATCH, ACT_API_KEY): inference here is /act's, in other words."""
    runtime: ActRuntime = request.app.state.act_runtime
    return runtime


async def resolve_model(cache: PolicyCache, name: str, version: str | None = None) -> LoadedPolicy:
    """A model name, `default` or a policy id (and, if given, its version) -> the loaded policy; 404/503 as
    protocol errors."""
    served = cache.models.get(name)
    if served is not None:
        return await _named_model_version(cache, served, version)
    if name == "default":
        loaded = cache.default
        if loaded is None:
            raise ProtocolError(
                503, "model default is not ready: no policy is loaded yet (train one with POST /train)", _RETRY_AFTER
            )
    else:
        if not _POLICY_ID.fullmatch(name) or int(name) > MAX_ID:
            raise ProtocolError(404, f"model {name!r} not found: use a model name, 'default' or a policy id")
        try:
            found = await cache.get(int(name))
        except PolicyUnavailableError:
            raise ProtocolError(503, f"model {name} cannot be loaded (invalid stored weights)") from None
        except SQLAlchemyError:
            raise ProtocolError(503, "the database is unavailable; retry shortly", _RETRY_AFTER) from None
        if found is None:
            raise ProtocolError(404, f"model {name!r} not found")
        loaded = found
    if version is not None and version != str(loaded.policy_id):
        raise ProtocolError(404, f"model {name!r} has no version {version!r} (its version is {loaded.policy_id})")
    return loaded


async def _named_model_version(cache: PolicyCache, served: ServedModel, version: str | None) -> LoadedPolicy:
    champion = served.champion
    if version is None or (champion is not None and version == str(champion.policy_id)):
        if champion is None:
            raise ProtocolError(503, f"model {served.name} is not ready: it has no champion policy yet", _RETRY_AFTER)
        return champion
    if not _POLICY_ID.fullmatch(version) or int(version) > MAX_ID:
        raise ProtocolError(404, f"model {served.name!r} has no version {version!r} (versions are its policy ids)")
    loaded = await _load(cache, int(version))
    if loaded is None or loaded.model_id != served.model_id:
        raise ProtocolError(404, f"model {served.name!r} has no version {version!r}")
    return loaded


async def _load(cache: PolicyCache, policy_id: int) -> LoadedPolicy | None:
    try:
        return await cache.get(policy_id)
    except PolicyUnavailableError:
        raise ProtocolError(503, f"policy {policy_id} cannot be loaded (invalid stored weights)") from None
    except SQLAlchemyError:
        raise ProtocolError(503, "the database is unavailable; retry shortly", _RETRY_AFTER) from None


@answers_errors
async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    """`{"name", "ready": true}` when the model can serve now; its lookup error (404, 503) otherwise."""
    await resolve_model(runtime_of(request).cache, name, version)
    return json_response({"name": name, "ready": True})


def check_inference_key(request: Request, runtime: ActRuntime) -> None:
    """Inference needs the same key as POST /act (ACT_API_KEY), or it would be a way around it."""
    check_inference_authorization(request.headers.get("authorization"), runtime)


def check_inference_authorization(authorization: str | None, runtime: ActRuntime) -> None:
    """The `Authorization` value (an HTTP header, gRPC metadata) against ACT_API_KEY, when one is set; 401 if wrong."""
    if runtime.act_api_key is None:
        return
    try:
        check_bearer(authorization, runtime.act_api_key)
    except ApiError as exc:
        raise ProtocolError(401, exc.message, dict(exc.headers or {})) from None


def load_json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object (400 when empty, not JSON, or not an object)."""
    if not body:
        raise ProtocolError(400, "a JSON request body is required")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProtocolError(400, "the request body is not valid JSON (NaN and Infinity are not JSON numbers)") from None
    if type(payload) is not dict:
        raise ProtocolError(400, "the request body must be a JSON object")
    return payload


def json_tensor(value: Any, field: str, body: bytes) -> FloatArray:
    """A JSON tensor (nested lists of numbers, any regular shape) as float32; its shape is the caller's to check."""
    if type(value) is not list:
        raise ProtocolError(400, f"{field} must be an array of numbers")
    return to_float32(value, field, None, body)


def act(runtime: ActRuntime, loaded: LoadedPolicy, observations: FloatArray) -> FloatArray:
    """The forward pass of a validated [n, obs_dim] batch, counted in /act's batch-size histogram."""
    actions = np.ascontiguousarray(loaded.actor.act(observations), dtype=np.float32)
    runtime.metrics.act_batch_size.observe(observations.shape[0])
    return actions
