"""KServe V1 and Open Inference Protocol (KServe V2 / Triton) routes, so existing inference clients work unchanged.

A model `{name}` is `default` (the policy /act serves) or a policy id; its one version is the policy id. The
input is `observation` (FP32, shape [-1, obs_dim]) and the output `action` (FP32, shape [-1, act_dim]). Lookup
and forward pass are the /act path's (PolicyCache, NumpyActor). Errors here use these protocols' own shape,
`{"error": "<message>"}`, not the service's, because their clients parse that one.

The V2 infer route also speaks Triton's binary tensor data extension (the `Inference-Header-Content-Length`
header), which tritonclient uses by default: inputs and outputs as raw little-endian FP32 after the JSON header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from fastapi import APIRouter, Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from app.infra.errors import ApiError
from app.infra.security import check_bearer
from app.schemas.errors import error_responses
from app.serving.policy_cache import LoadedPolicy, PolicyCache, PolicyUnavailableError
from app.serving.runtime import ActRuntime

INPUT_NAME = "observation"
OUTPUT_NAME = "action"
DATATYPE = "FP32"
PLATFORM = "numpy"
SERVER_NAME = "ddpg-policy-service"
BINARY_HEADER = "inference-header-content-length"
_POLICY_ID = re.compile(r"[1-9][0-9]{0,9}")
_MAX_ID = 2**31 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)

FloatArray = npt.NDArray[np.float32]


class ProtocolError(Exception):
    """An error answered as `{"error": message}` (KServe V1 and V2 both use that shape)."""

    def __init__(self, status_code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers

    def response(self) -> Response:
        return _json({"error": self.message}, self.status_code, self.headers)


def _json(content: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json", headers=headers)


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
    """`openapi_extra` for a hand-parsed JSON body."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


# ---- shared: model lookup, auth, tensors ---------------------------------------------------------------


def _runtime(request: Request) -> ActRuntime:
    runtime: ActRuntime = request.app.state.act_runtime
    return runtime


async def _resolve(cache: PolicyCache, name: str, version: str | None = None) -> LoadedPolicy:
    """`default` or a policy id -> the loaded policy; 404/503 as protocol errors."""
    if name == "default":
        loaded = cache.default
        if loaded is None:
            raise ProtocolError(
                503,
                "model default is not ready: no policy is loaded yet (train one with POST /train)",
                {"Retry-After": "5"},
            )
    else:
        if not _POLICY_ID.fullmatch(name) or int(name) > _MAX_ID:
            raise ProtocolError(404, f"model {name!r} not found: use 'default' or a policy id")
        try:
            found = await cache.get(int(name))
        except PolicyUnavailableError:
            raise ProtocolError(503, f"model {name} cannot be loaded (invalid stored weights)") from None
        except SQLAlchemyError:
            raise ProtocolError(503, "the database is unavailable; retry shortly", {"Retry-After": "5"}) from None
        if found is None:
            raise ProtocolError(404, f"model {name!r} not found")
        loaded = found
    if version is not None and version != str(loaded.policy_id):
        raise ProtocolError(404, f"model {name!r} has no version {version!r} (its version is {loaded.policy_id})")
    return loaded


def _check_act_key(request: Request, runtime: ActRuntime) -> None:
    """Inference needs the same key as POST /act (ACT_API_KEY), or it would be a way around it."""
    if runtime.act_api_key is None:
        return
    try:
        check_bearer(request.headers.get("authorization"), runtime.act_api_key)
    except ApiError as exc:
        raise ProtocolError(401, exc.message, dict(exc.headers or {})) from None


def _load_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise ProtocolError(400, "a JSON request body is required")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ProtocolError(400, "the request body is not valid JSON (NaN and Infinity are not JSON numbers)") from None
    if type(payload) is not dict:
        raise ProtocolError(400, "the request body must be a JSON object")
    return payload


def _walk_numbers(value: Any, where: str) -> None:
    """The slow path, for the error message: name the first element that is not a finite number."""
    if type(value) is list:
        for index, item in enumerate(value):
            _walk_numbers(item, f"{where}[{index}]")
        return
    if type(value) is not float and type(value) is not int:
        raise ProtocolError(400, f"{where} must be a number, got {type(value).__name__}")
    if not -_FLOAT32_MAX <= value <= _FLOAT32_MAX:
        raise ProtocolError(400, f"{where} must be a finite number within FP32 range")


def _float32(value: Any, where: str, body: bytes) -> FloatArray:
    """Nested lists of numbers -> float32 array (any shape), with a 400 naming the bad element otherwise."""
    if type(value) is not list:
        raise ProtocolError(400, f"{where} must be an array of numbers")
    # JSON true/false would pass numpy's numeric inference as 1/0; only walk the input when they occur at all.
    if b"true" in body or b"false" in body:
        _walk_numbers(value, where)
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError):
        raise ProtocolError(400, f"{where} must be a regular (not ragged) array of numbers") from None
    if array.dtype.kind not in "fi":
        _walk_numbers(value, where)
        raise ProtocolError(400, f"{where} must be a regular (not ragged) array of numbers")
    with np.errstate(over="ignore"):
        result: FloatArray = array.astype(np.float32)
    if not np.isfinite(result).all():
        _walk_numbers(value, where)
        raise ProtocolError(400, f"{where} must contain finite numbers within FP32 range")
    return result


def _check_batch(observations: FloatArray, loaded: LoadedPolicy, max_batch: int, where: str) -> None:
    if observations.ndim != 2 or observations.shape[1] != loaded.actor.obs_dim:
        raise ProtocolError(
            400,
            f"{where} must have shape [n, {loaded.actor.obs_dim}] (obs_dim of policy {loaded.policy_id}), "
            f"got {list(observations.shape)}",
        )
    if not 1 <= observations.shape[0] <= max_batch:
        raise ProtocolError(400, f"{where} must hold between 1 and {max_batch} observations")


def _tensor_metadata(loaded: LoadedPolicy) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    inputs = [{"name": INPUT_NAME, "datatype": DATATYPE, "shape": [-1, loaded.actor.obs_dim]}]
    outputs = [{"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": [-1, loaded.actor.act_dim]}]
    return inputs, outputs


# ---- KServe V1 ----------------------------------------------------------------------------------------------

v1 = APIRouter(prefix="/v1", tags=["KServe V1"])


@v1.get("/models", responses={200: {"description": '`{"models": ["default", ...]}`: the models loaded here.'}})
async def v1_models(request: Request) -> Response:
    """The models this process has loaded: `default` (when a policy is loaded)."""
    cache: PolicyCache = request.app.state.policy_cache
    return _json({"models": ["default"] if cache.default is not None else []})


@v1.get(
    "/models/{name}",
    responses={200: {"description": '`{"name": "<name>", "ready": true}`'}, **_errors(404, 503)},
)
async def v1_model_ready(name: str, request: Request) -> Response:
    """Whether the model (`default` or a policy id) is ready to predict."""
    try:
        await _resolve(request.app.state.policy_cache, name)
    except ProtocolError as exc:
        return exc.response()
    return _json({"name": name, "ready": True})


@v1.post(
    "/models/{name}:predict",
    openapi_extra=_body_doc(
        {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": {
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "number"}},
                    "description": "Observations, each `obs_dim` numbers.",
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
    runtime = _runtime(request)
    try:
        _check_act_key(request, runtime)
        body = await request.body()
        payload = _load_json(body)
        if "instances" not in payload:
            raise ProtocolError(400, 'expected {"instances": [[...observation...], ...]}')
        loaded = await _resolve(runtime.cache, name)
        observations = _float32(payload["instances"], "instances", body)
        _check_batch(observations, loaded, runtime.max_batch, "instances")
    except ProtocolError as exc:
        return exc.response()
    actions = loaded.actor.act(observations)
    runtime.metrics.act_batch_size.observe(observations.shape[0])
    return Response(
        orjson.dumps({"predictions": actions}, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
    )


# ---- Open Inference Protocol (V2) ---------------------------------------------------------------------------

v2 = APIRouter(prefix="/v2", tags=["Open Inference Protocol V2"])


@v2.get("", responses={200: {"description": '`{"name", "version", "extensions"}`'}})
async def v2_server_metadata(request: Request) -> Response:
    """Server metadata."""
    return _json({"name": SERVER_NAME, "version": request.app.version, "extensions": ["binary_tensor_data"]})


@v2.get("/health/live", responses={200: {"description": '`{"live": true}`'}})
async def v2_live() -> Response:
    """Server live: the process answers."""
    return _json({"live": True})


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
    return _json({"ready": ready}, 200 if ready else 400)


async def _model_metadata(request: Request, name: str, version: str | None) -> Response:
    try:
        loaded = await _resolve(request.app.state.policy_cache, name, version)
    except ProtocolError as exc:
        return exc.response()
    inputs, outputs = _tensor_metadata(loaded)
    return _json(
        {
            "name": name,
            "versions": [str(loaded.policy_id)],
            "platform": PLATFORM,
            "inputs": inputs,
            "outputs": outputs,
        }
    )


_METADATA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "`{name, versions, platform, inputs, outputs}`; tensors as `{name, datatype, shape}`."},
    **_errors(404, 503),
}


@v2.get("/models/{name}", responses=_METADATA_RESPONSES)
async def v2_model_metadata(name: str, request: Request) -> Response:
    """Model metadata: input `observation` [-1, obs_dim] and output `action` [-1, act_dim], both FP32."""
    return await _model_metadata(request, name, None)


@v2.get("/models/{name}/versions/{version}", responses=_METADATA_RESPONSES)
async def v2_model_version_metadata(name: str, version: str, request: Request) -> Response:
    """Model metadata of one version (the policy id)."""
    return await _model_metadata(request, name, version)


async def _model_ready(request: Request, name: str, version: str | None) -> Response:
    try:
        await _resolve(request.app.state.policy_cache, name, version)
    except ProtocolError as exc:
        if exc.status_code == 503 and name == "default":
            return _json({"name": name, "ready": False}, 400)
        return exc.response()
    return _json({"name": name, "ready": True})


_READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": '`{"name", "ready": true}`'},
    400: {"description": '`{"name", "ready": false}`'},
    **_errors(404, 503),
}


@v2.get("/models/{name}/ready", responses=_READY_RESPONSES)
async def v2_model_ready(name: str, request: Request) -> Response:
    """Model ready."""
    return await _model_ready(request, name, None)


@v2.get("/models/{name}/versions/{version}/ready", responses=_READY_RESPONSES)
async def v2_model_version_ready(name: str, version: str, request: Request) -> Response:
    """Model ready, for one version (the policy id)."""
    return await _model_ready(request, name, version)


@dataclass(frozen=True, slots=True)
class InferInput:
    """A validated V2 inference request: the observations, whether to answer in binary, and the id to echo."""

    observations: FloatArray
    binary_output: bool
    request_id: str | None


def _parse_infer(body: bytes, header_length: str | None, loaded: LoadedPolicy, max_batch: int) -> InferInput:
    binary_part = b""
    if header_length is not None:
        try:
            json_length = int(header_length)
        except ValueError:
            raise ProtocolError(400, "Inference-Header-Content-Length must be an integer") from None
        if not 0 < json_length <= len(body):
            raise ProtocolError(400, "Inference-Header-Content-Length is outside the request body")
        body, binary_part = body[:json_length], body[json_length:]
    payload = _load_json(body)
    inputs = payload.get("inputs")
    if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
        raise ProtocolError(400, f"expected `inputs` with exactly one tensor, {INPUT_NAME!r}")
    tensor: dict[str, Any] = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise ProtocolError(400, f"unexpected input {tensor.get('name')!r}; this model's input is {INPUT_NAME!r}")
    if tensor.get("datatype") != DATATYPE:
        raise ProtocolError(400, f"input {INPUT_NAME!r} must have datatype {DATATYPE}, got {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if type(shape) is not list or len(shape) != 2 or any(type(d) is not int or d < 0 for d in shape):
        raise ProtocolError(400, f"input {INPUT_NAME!r} must have shape [n, {loaded.actor.obs_dim}], got {shape!r}")
    count = shape[0] * shape[1]
    parameters = tensor.get("parameters") or {}
    if type(parameters) is not dict:
        raise ProtocolError(400, "input `parameters` must be an object")
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        if type(binary_size) is not int or binary_size != 4 * count or len(binary_part) != binary_size:
            raise ProtocolError(400, f"binary input {INPUT_NAME!r} must be {4 * count} bytes of little-endian FP32")
        flat: FloatArray = np.frombuffer(binary_part, dtype="<f4").astype(np.float32)
        if not np.isfinite(flat).all():
            raise ProtocolError(400, f"input {INPUT_NAME!r} must contain finite numbers")
    else:
        if "data" not in tensor:
            raise ProtocolError(400, f"input {INPUT_NAME!r} has no `data`")
        flat = _float32(tensor["data"], f"{INPUT_NAME}.data", body).reshape(-1)
    if flat.size != count:
        raise ProtocolError(400, f"input {INPUT_NAME!r} has {flat.size} numbers but its shape {shape} needs {count}")
    observations = flat.reshape(shape)
    _check_batch(observations, loaded, max_batch, f"input {INPUT_NAME!r}")

    binary_output = _wants_binary(payload)
    request_id = payload.get("id")
    if request_id is not None and type(request_id) is not str:
        raise ProtocolError(400, "`id` must be a string")
    return InferInput(observations, binary_output, request_id)


def _wants_binary(payload: dict[str, Any]) -> bool:
    """Outputs as binary data when the request asks (per output, or for all with `binary_data_output`)."""
    outputs = payload.get("outputs")
    request_parameters = payload.get("parameters") or {}
    binary = type(request_parameters) is dict and request_parameters.get("binary_data_output") is True
    if outputs is None:
        return binary
    if type(outputs) is not list or any(type(o) is not dict for o in outputs):
        raise ProtocolError(400, '`outputs` must be a list of {"name": ...} objects')
    for output in outputs:
        if output.get("name") != OUTPUT_NAME:
            raise ProtocolError(400, f"unknown output {output.get('name')!r}; this model's output is {OUTPUT_NAME!r}")
        output_parameters = output.get("parameters") or {}
        if type(output_parameters) is dict and "binary_data" in output_parameters:
            binary = output_parameters["binary_data"] is True
    return binary


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
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string", "enum": [INPUT_NAME]},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "datatype": {"type": "string", "enum": [DATATYPE]},
                    "parameters": {"type": "object"},
                    "data": {"type": "array", "description": "Row-major numbers, flat or nested."},
                },
            },
        },
        "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
    },
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": '`{"model_name", "model_version", "id", "outputs": [{"name": "action", "shape": [n, act_dim], '
        '"datatype": "FP32", "data": [...]}]}` (binary data after the JSON header when asked).'
    },
    **_errors(400, 401, 404, 503),
}


async def _infer(request: Request, name: str, version: str | None) -> Response:
    runtime = _runtime(request)
    try:
        _check_act_key(request, runtime)
        loaded = await _resolve(runtime.cache, name, version)
        parsed = _parse_infer(await request.body(), request.headers.get(BINARY_HEADER), loaded, runtime.max_batch)
    except ProtocolError as exc:
        return exc.response()
    actions = np.ascontiguousarray(loaded.actor.act(parsed.observations), dtype=np.float32)
    runtime.metrics.act_batch_size.observe(parsed.observations.shape[0])
    output: dict[str, Any] = {"name": OUTPUT_NAME, "datatype": DATATYPE, "shape": list(actions.shape)}
    raw = actions.astype("<f4").tobytes() if parsed.binary_output else b""
    if parsed.binary_output:
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = actions.reshape(-1)
    content: dict[str, Any] = {"model_name": name, "model_version": str(loaded.policy_id), "outputs": [output]}
    if parsed.request_id is not None:
        content["id"] = parsed.request_id
    header = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    if not parsed.binary_output:
        return Response(header, media_type="application/json")
    return Response(
        header + raw,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


@v2.post(
    "/models/{name}/infer",
    openapi_extra=_body_doc(_INFER_SCHEMA, _INFER_EXAMPLE),
    responses=_INFER_RESPONSES,
)
async def v2_infer(name: str, request: Request) -> Response:
    """Inference with typed tensors: `observation` [n, obs_dim] FP32 in, `action` [n, act_dim] FP32 out."""
    return await _infer(request, name, None)


@v2.post(
    "/models/{name}/versions/{version}/infer",
    openapi_extra=_body_doc(_INFER_SCHEMA, _INFER_EXAMPLE),
    responses=_INFER_RESPONSES,
)
async def v2_version_infer(name: str, version: str, request: Request) -> Response:
    """Inference on one version (the policy id) of the model."""
    return await _infer(request, name, version)


router = APIRouter()
router.include_router(v1)
router.include_router(v2)
