"""KServe V1 and Open Inference Protocol (KServe V2 / Triton) routes, so existing inference clients work unchanged.

Only the HTTP side lives here: paths, OpenAPI documentation and the server-level answers. Parsing, lookup, the
forward pass and the protocols' error shape `{"error": "<message>"}` are the adapters' in app.serving
(`protocols`, `kserve_v1`, `inference_v2`), on the same observation checks as POST /act.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.routes.openapi_security import NEEDS_ACT_KEY
from app.schemas.errors import error_responses
from app.serving import inference_v2, kserve_v1
from app.serving.inference_v2 import DATATYPE, INPUT_NAME, OUTPUT_NAME, SERVER_NAME
from app.serving.policy_cache import PolicyCache
from app.serving.protocols import json_response, model_ready

# A handler of `/models/{name}...`, given the version when the path names one.
ModelHandler = Callable[[Request, str, str | None], Awaitable[Response]]

_ERROR_DOC = {
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
        }
    }
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the protocols' error shape.

    Plus 422 in the service's shape: FastAPI would otherwise document its own validation-error schema for the
    path parameters (plain strings here, so that 422 cannot actually happen).
    """
    documented: dict[int | str, dict[str, Any]] = dict(error_responses(422))
    documented.update({status: {"description": '`{"error": "<message>"}`', **_ERROR_DOC} for status in statuses})
    return documented


def _body_doc(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` for a hand-parsed JSON inference body (which needs ACT_API_KEY when one is set)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        },
        **NEEDS_ACT_KEY,
    }


def _add_model_routes(
    router: APIRouter,
    method: str,
    suffix: str,
    handler: ModelHandler,
    *,
    names: tuple[str, str],
    docs: tuple[str, str],
    **options: Any,
) -> None:
    """Serve `handler` at `/models/{name}{suffix}` and at `/models/{name}/versions/{version}{suffix}`.

    `names` and `docs` are the two operations' names (their OpenAPI ids and summaries) and descriptions.
    """

    async def latest(name: str, request: Request) -> Response:
        return await handler(request, name, None)

    async def versioned(name: str, version: str, request: Request) -> Response:
        return await handler(request, name, version)

    for path, endpoint, operation, description in (
        (f"/models/{{name}}{suffix}", latest, names[0], docs[0]),
        (f"/models/{{name}}/versions/{{version}}{suffix}", versioned, names[1], docs[1]),
    ):
        router.add_api_route(path, endpoint, methods=[method], name=operation, description=description, **options)


# ---- KServe V1 ----------------------------------------------------------------------------------------------

v1 = APIRouter(prefix="/v1", tags=["KServe V1"])


@v1.get("/models", responses={200: {"description": '`{"models": ["default", ...]}`: the models loaded here.'}})
async def v1_models(request: Request) -> Response:
    """The models this process can serve: `default` (the default model, when it has a policy) and every other model
    with a champion, by name."""
    cache: PolicyCache = request.app.state.policy_cache
    named = [name for name, model in cache.models.items() if model.champion is not None and name != cache.default_model]
    return json_response({"models": (["default"] if cache.default is not None else []) + named})


@v1.get(
    "/models/{name}",
    responses={200: {"description": '`{"name": "<name>", "ready": true}`'}, **_errors(404, 503)},
)
async def v1_model_ready(name: str, request: Request) -> Response:
    """Whether the model (`default` or a policy id) is ready to predict."""
    return await model_ready(request, name)


@v1.post(
    "/models/{name}:predict",
    openapi_extra=_body_doc(
        {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"type": "array", "minItems": 1, "items": {"type": "number"}},
                    "description": "Observations (1 to MAX_BATCH), each `obs_dim` numbers.",
                }
            },
        },
        {"instances": [[1.0, 0.0, 0.0], [0.0, 1.0, -0.5]]},
    ),
    responses={
        200: {"description": '`{"predictions": [[...], ...]}`: one action per instance, in order.'},
        **_errors(400, 401, 404, 503),
    },
)
async def v1_predict(name: str, request: Request) -> Response:
    """KServe V1 predict: `{"instances": [observation, ...]}` -> `{"predictions": [action, ...]}`."""
    return await kserve_v1.predict(request, name)


# ---- Open Inference Protocol (V2) ---------------------------------------------------------------------------

v2 = APIRouter(prefix="/v2", tags=["Open Inference Protocol V2"])


@v2.get("", responses={200: {"description": '`{"name", "version", "extensions"}`'}})
async def v2_server_metadata(request: Request) -> Response:
    """Server metadata."""
    return json_response({"name": SERVER_NAME, "version": request.app.version, "extensions": ["binary_tensor_data"]})


@v2.get("/health/live", responses={200: {"description": '`{"live": true}`'}})
async def v2_live() -> Response:
    """Server live: the process answers."""
    return json_response({"live": True})


@v2.get(
    "/health/ready",
    responses={
        200: {"description": '`{"ready": true}`'},
        400: {"description": '`{"ready": false}`: the protocol answers "not ready" with a 4xx status.'},
    },
)
async def v2_ready(request: Request) -> Response:
    """Server ready: the database is prepared and a default policy is loaded."""
    cache: PolicyCache = request.app.state.policy_cache
    ready = request.app.state.database.prepared.is_set() and cache.default is not None
    return json_response({"ready": ready}, 200 if ready else 400)


_add_model_routes(
    v2,
    "GET",
    "",
    inference_v2.model_metadata,
    names=("v2_model_metadata", "v2_model_version_metadata"),
    docs=(
        "Model metadata: input `observation` [-1, obs_dim] and output `action` [-1, act_dim], both FP32.",
        "Model metadata of one version (the policy id).",
    ),
    responses={
        200: {"description": "`{name, versions, platform, inputs, outputs}`; tensors as `{name, datatype, shape}`."},
        **_errors(404, 503),
    },
)

_add_model_routes(
    v2,
    "GET",
    "/ready",
    inference_v2.model_ready,
    names=("v2_model_ready", "v2_model_version_ready"),
    docs=("Model ready.", "Model ready, for one version (the policy id)."),
    responses={
        200: {"description": '`{"name", "ready": true}`'},
        400: {"description": '`{"name", "ready": false}`'},
        **_errors(404, 503),
    },
)

_INFER_EXAMPLE = {
    "id": "42",
    "inputs": [{"name": INPUT_NAME, "shape": [2, 3], "datatype": DATATYPE, "data": [1.0, 0.0, 0.0, 0.0, 1.0, -0.5]}],
    "outputs": [{"name": OUTPUT_NAME}],
}
_INFER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "description": "Exactly one tensor, `observation`.",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string", "enum": [INPUT_NAME]},
                    "shape": {
                        "type": "array",
                        "minItems": 2,
                        "maxItems": 2,
                        "items": {"type": "integer", "minimum": 0},
                        "description": "[n, obs_dim].",
                    },
                    "datatype": {"type": "string", "enum": [DATATYPE]},
                    "parameters": {"type": "object"},
                    "data": {"type": "array", "description": "Row-major numbers, flat or nested."},
                },
            },
        },
        "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
    },
}

_add_model_routes(
    v2,
    "POST",
    "/infer",
    inference_v2.infer,
    names=("v2_infer", "v2_version_infer"),
    docs=(
        "Inference with typed tensors: `observation` [n, obs_dim] FP32 in, `action` [n, act_dim] FP32 out.",
        "Inference on one version (the policy id) of the model.",
    ),
    openapi_extra=_body_doc(_INFER_SCHEMA, _INFER_EXAMPLE),
    responses={
        200: {
            "description": '`{"model_name", "model_version", "id", "outputs": [{"name": "action", '
            '"shape": [n, act_dim], "datatype": "FP32", "data": [...]}]}` (binary data after the JSON header when '
            "asked)."
        },
        **_errors(400, 401, 404, 503),
    },
)


router = APIRouter()
router.include_router(v1)
router.include_router(v2)
